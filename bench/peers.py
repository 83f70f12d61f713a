"""Side by side with the peers: jaxcurv against the code researchers compare it with.

``python -m bench.peers --out DIR [--tiny] [--sections a,b] [--data-dir D]`` writes
``DIR/peers.json`` (every row, its check and timings, the environment and load average) and
``DIR/peers.md`` (the table). ``python -m bench.peers --render README.md --source DIR/peers.json``
rewrites README's "Performance" table from a committed run.

Rows (ratio = the peer's median time / ours: above 1 we are faster):

- curvature: per-example tr(H) and tr(H²), P Rademacher probes, batch N, the GELU CNN of
  ``models.get_model("cnn")`` on 32×32×3 inputs, its weights copied into an identical PyTorch
  network: ``make_input_curvature`` (exact HVPs) vs the papers' authors' algorithm in PyTorch
  (finite differences of the batch-mean loss, Δg = ∇ₓ[L(x + hv) − L(x)], h = 1e-3, a loop over
  probes) and vs exact HVPs in PyTorch (``torch.func.jvp`` of ``torch.func.grad``, probes
  vmapped). Checked first with the same probes (ours re-drawn on the host and passed to PyTorch):
  exact HVPs agree to float32 rounding, finite differences to their truncation error.
- dpsgd: one DP-SGD step (clip C = 1, σ = 1, SGD with momentum, batch N, no Poisson sampling)
  of ``training.make_train_step(dp=DPPlan(...))`` vs Opacus (``GradSampleModule`` +
  ``DPOptimizer``, what ``PrivacyEngine.make_private(poisson_sampling=False)`` builds), and the
  non-private step vs plain PyTorch; plus our DP step over our non-private step (the cost of
  privacy, target ≤ 2). Checked first: with σ = 0, one step from the same weights on the same
  batch gives the same update in both frameworks (DP and non-private).
- ensemble: members trained per hour on a CIFAR-10 subset (members on random halves, same
  recipe: SGD with momentum, constant rate, no augmentation; the same initial weights), ours
  (``ensemble.train``) vs a PyTorch loop over members and vs ``torch.func`` stacked members
  (``functional_call`` vmapped over stacked parameters). Members per hour = 3600 × members /
  (epochs × the median steady epoch time), first epoch excluded; every framework's mean test
  accuracy must reach the same fixed target.
- attacks: LiRA (online, offline) and RMIA scores of N targets × K shadows × A augmentations of
  synthetic statistics (``bench.mia.make_statistics``): ``mia.lira`` with the published code's
  options vs the LiRA authors' ``plot.py`` functions, and ``mia.rmia`` (offline) vs
  privacy_meter's ``run_rmia``; both re-written here from their documented math (see
  ``lira_reference`` and ``rmia_reference``), outputs checked equal before timing.
- limit: FLOPs per curvature sample from XLA's cost analysis of ``make_curvature_fn`` vs the
  analytical count of one HVP per probe (2 forward + 2 input-backward passes = 4F, F the
  forward FLOPs), and the achieved FLOP/s vs a measured float32 matmul on the same cores.

Rules: every row runs in this process on the same inputs with PyTorch limited to the cores XLA
uses (``torch.set_num_threads``); compile/warm-up calls are excluded (``time_interleaved``:
the calls alternate, so a change of load hits all alike), median of ≥ 5 repeats. PyTorch and
Opacus are the optional ``.[bench]`` extra; without them their rows say "missing" with the
install command, never "failed". Without CIFAR-10 files the ensemble rows train on a synthetic
CIFAR-shaped set and say so. ``--tiny`` runs every row at toy size (tests/test_peers.py).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

if not __package__:  # python bench/peers.py from a bare checkout: the repository root on the path
    sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from jaxcurv import data, ensemble, mia, models, report  # noqa: E402
from jaxcurv.curvature import make_curvature_fn, make_input_curvature  # noqa: E402
from jaxcurv.optim import OptimizerConfig, make_optimizer  # noqa: E402
from jaxcurv.privacy import DPPlan  # noqa: E402
from jaxcurv.training import init_state, make_train_step  # noqa: E402
from jaxcurv.workflow import (  # noqa: E402
    describe_device,
    environment,
    load_average,
    time_interleaved,
)
from jaxcurv.errors import ConfigError  # noqa: E402
from jaxcurv.workflow import benchmark as B  # noqa: E402
from jaxcurv.workflow.settings import DataFolder, setting  # noqa: E402
from jaxcurv.workflow.experiment import headline  # noqa: E402

if __package__:  # python -m bench.peers
    from bench import ensemble as bench_ensemble
    from bench import mia as bench_mia
else:  # python bench/peers.py: this folder is sys.path[0]
    import ensemble as bench_ensemble
    import mia as bench_mia

__all__ = ["Sizes", "FULL", "TINY", "SECTIONS", "INSTALL_HINT", "run", "render_markdown",
           "render_readme", "lira_reference", "rmia_reference", "main"]

INSTALL_HINT = "pip install -e '.[bench]'"
SECTIONS = ("curvature", "dpsgd", "ensemble", "attacks", "limit")
README_BEGIN = "<!-- performance table: python -m bench.peers --render README.md -->"
README_END = "<!-- end of performance table -->"
_H = 1e-3  # the authors' finite-difference step
_CLIP, _SIGMA, _LR, _MOMENTUM = 1.0, 1.0, 0.05, 0.9
_KEYS = {"weights": 1, "probes": 2, "batch": 3, "dp_noise": 4, "ensemble": 5}


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Sizes of one run: ``FULL`` (the issue's sizes) or ``TINY`` (the test)."""

    batch: int                # curvature and DP-SGD batch
    probes: int               # Rademacher probes
    width: int                # CNN width (first conv's channels)
    hidden: int               # CNN dense width
    repeats: int              # timed repeats after warm-up (median)
    attack_targets: int       # N
    attack_shadows: int       # K
    attack_augmentations: int  # A
    attack_population: int    # RMIA's population Z
    ens_members: int
    ens_train: int            # CIFAR-10 subset (members on random halves)
    ens_test: int
    ens_epochs: int
    ens_batch: int
    ens_target: float         # mean test accuracy every framework must reach
    matmul: int               # n of the n×n float32 matmul that measures the peak


FULL = Sizes(batch=256, probes=10, width=16, hidden=64, repeats=5, attack_targets=50_000,
             attack_shadows=64, attack_augmentations=2, attack_population=10_000,
             ens_members=4, ens_train=4_000, ens_test=1_000, ens_epochs=8, ens_batch=128,
             ens_target=0.30, matmul=1024)
TINY = Sizes(batch=16, probes=2, width=8, hidden=32, repeats=5, attack_targets=2_000,
             attack_shadows=8, attack_augmentations=2, attack_population=500,
             ens_members=2, ens_train=256, ens_test=256, ens_epochs=6, ens_batch=32,
             ens_target=0.25, matmul=256)


# ----------------------------------------------------------------------------------------------
# PyTorch: availability, threads, the same CNN


@dataclasses.dataclass
class _Torch:
    """The optional peer: the torch module (None when missing), why it is missing, its device."""

    module: Any = None
    reason: str = ""
    device: str = "cpu"
    opacus: Any = None
    opacus_reason: str = ""

    def sync(self) -> None:
        if self.module is not None and self.device == "cuda":
            self.module.cuda.synchronize()


def cores() -> int:
    """The cores this process may use (XLA:CPU sizes its thread pool from them)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _import_torch() -> _Torch:
    """torch (threads = the cores XLA uses; CUDA when JAX runs on a GPU) and opacus, or the
    reasons they are missing."""
    try:
        import torch
    except ImportError as err:
        return _Torch(reason=f"torch is not installed ({err}): {INSTALL_HINT}",
                      opacus_reason=f"torch is not installed: {INSTALL_HINT}")
    torch.set_num_threads(cores())
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set by an earlier call in this process
        pass
    gpu = jax.default_backend() == "gpu" and torch.cuda.is_available()
    peer = _Torch(module=torch, device="cuda" if gpu else "cpu")
    try:
        import opacus
    except ImportError as err:
        peer.opacus_reason = f"opacus is not installed ({err}): {INSTALL_HINT}"
    else:
        peer.opacus = opacus
    return peer


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(low, high) padding of flax's "SAME" for one spatial axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _torch_cnn(peer: _Torch, variables: dict, image_shape: tuple[int, int, int]):
    """``models.CNN`` (GELU, tanh approximation as flax's default) in PyTorch with the weights of
    ``variables`` copied in: NCHW inputs, the same padding, pooling and flatten order."""
    torch = peer.module
    nn, F = torch.nn, torch.nn.functional
    p = jax.tree.map(np.asarray, variables["params"])
    h, w, cin = image_shape
    width = p["Conv_0"]["kernel"].shape[-1]
    hidden, classes = p["Dense_1"]["kernel"].shape
    pad2 = _same_padding(h, 3, 2) + _same_padding(w, 3, 2)  # (top, bottom, left, right)
    h2, w2 = -(-h // 2), -(-w // 2)
    window = (max(1, h2 // 4), max(1, w2 // 4))

    class CNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv0 = nn.Conv2d(cin, width, 3, padding=1)
            self.conv1 = nn.Conv2d(width, 2 * width, 3, stride=2)
            self.dense0 = nn.Linear(p["Dense_0"]["kernel"].shape[0], hidden)
            self.dense1 = nn.Linear(hidden, classes)

        def forward(self, x):
            x = F.gelu(self.conv0(x), approximate="tanh")
            x = F.pad(x, (pad2[2], pad2[3], pad2[0], pad2[1]))
            x = F.gelu(self.conv1(x), approximate="tanh")
            if window != (1, 1):
                x = F.avg_pool2d(x, window)
            x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # flax flattens NHWC
            return self.dense1(F.gelu(self.dense0(x), approximate="tanh"))

    net = CNN()
    with torch.no_grad():
        for name, layer in (("Conv_0", net.conv0), ("Conv_1", net.conv1)):
            layer.weight.copy_(torch.from_numpy(p[name]["kernel"].transpose(3, 2, 0, 1).copy()))
            layer.bias.copy_(torch.from_numpy(p[name]["bias"].copy()))
        for name, layer in (("Dense_0", net.dense0), ("Dense_1", net.dense1)):
            layer.weight.copy_(torch.from_numpy(p[name]["kernel"].T.copy()))
            layer.bias.copy_(torch.from_numpy(p[name]["bias"].copy()))
    return net.to(peer.device)


def _flax_params(net) -> dict:
    """The PyTorch CNN's parameters in the flax layout (to compare updates)."""
    t = {k: v.detach().cpu().numpy().copy() for k, v in net.state_dict().items()}
    return {"Conv_0": {"kernel": t["conv0.weight"].transpose(2, 3, 1, 0), "bias": t["conv0.bias"]},
            "Conv_1": {"kernel": t["conv1.weight"].transpose(2, 3, 1, 0), "bias": t["conv1.bias"]},
            "Dense_0": {"kernel": t["dense0.weight"].T, "bias": t["dense0.bias"]},
            "Dense_1": {"kernel": t["dense1.weight"].T, "bias": t["dense1.bias"]}}


def _nchw(peer: _Torch, x: np.ndarray):
    return peer.module.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(peer.device)


def _labels(peer: _Torch, y: np.ndarray):
    return peer.module.from_numpy(np.asarray(y, np.int64)).to(peer.device)


# ----------------------------------------------------------------------------------------------
# rows


def _row(section: str, name: str, ours: str, peer: str, **fields) -> dict:
    return {"section": section, "name": name, "ours": ours, "peer": peer, **fields}


def _timed_row(base: dict, ours, peer, *, check: dict, unit: str, work: float) -> dict:
    """A ratio row from two Timings: medians, rates (``work`` per call in ``unit``), speedup =
    peer median / our median; status ok only when the agreement check passed."""
    return {**base, "status": "ok" if check["passed"] else "check failed", "check": check,
            "ours_median_s": ours.median, "peer_median_s": peer.median,
            "ours_first_s": ours.first, "peer_first_s": peer.first,
            "ours_times_s": list(ours.times), "peer_times_s": list(peer.times),
            "unit": unit, "ours_rate": work / ours.median, "peer_rate": work / peer.median,
            "speedup": peer.median / ours.median, "load_avg_1min": ours.load}


def _missing(base: dict, reason: str) -> dict:
    return {**base, "status": "missing", "reason": reason, "speedup": None}


def _relative_difference(a, b) -> float:
    """max |a − b| / max |b| over every leaf of two matching pytrees."""
    diffs = jax.tree.map(lambda u, v: float(np.max(np.abs(np.asarray(u) - np.asarray(v)))), a, b)
    scale = max(float(np.max(np.abs(np.asarray(v)))) for v in jax.tree.leaves(b))
    return max(jax.tree.leaves(diffs)) / max(scale, 1e-30)


def _spearman(a, b) -> float:
    return float(stats.spearmanr(np.ravel(a), np.ravel(b)).statistic)


# ----------------------------------------------------------------------------------------------
# inputs


@dataclasses.dataclass
class _Inputs:
    """What the sections share: sizes, the CNN and its weights, a batch, the data sets."""

    sizes: Sizes
    seed: int
    model: Any
    variables: dict
    x: np.ndarray
    y: np.ndarray
    train: Any
    test: Any
    data_info: dict

    def key(self, name: str) -> jax.Array:
        return jax.random.fold_in(jax.random.PRNGKey(self.seed), _KEYS[name])


def _inputs(sizes: Sizes, seed: int, data_dir, splits=None) -> _Inputs:
    """The GELU CNN with random weights, a batch of CIFAR-10 test images and the CIFAR-10 subset
    of the ensemble rows (a synthetic stand-in without the files). ``splits``: (train, test,
    description) already loaded (the GPU suite passes its own)."""
    if splits is None:
        found = B.cifar10(data_dir)
        splits = None if found is None else (*found, {"dataset": "cifar10", "fallback": False})
    if splits is not None:
        train, test, info = splits
        info = {k: info[k] for k in ("dataset", "fallback", "note") if k in info}
    else:
        train, test = B.synthetic_cifar(sizes.ens_train, max(sizes.ens_test, sizes.batch), seed)
        info = {"dataset": "synthetic", "fallback": True,
                "note": "no CIFAR-10 files found (--data-dir or $JAXCURV_DATA_DIR): the ensemble "
                        "rows train on a synthetic 32×32×3 stand-in"}
    train = B.subset(train, sizes.ens_train, seed=seed)
    batch = B.subset(test, sizes.batch, seed=seed + 1)
    test = B.subset(test, sizes.ens_test, seed=seed + 2)
    model = models.get_model("cnn", 10, width=sizes.width, hidden=sizes.hidden)
    variables = models.init_variables(model, jax.random.fold_in(jax.random.PRNGKey(seed),
                                                                _KEYS["weights"]), (32, 32, 3))
    info.update(train_examples=len(train), test_examples=len(test))
    return _Inputs(sizes, seed, model, jax.tree.map(np.asarray, variables), batch.images,
                   batch.labels, train, test, info)


# ----------------------------------------------------------------------------------------------
# curvature


def _our_probes(key: jax.Array, n: int, shape: tuple, probes: int) -> np.ndarray:
    """The Rademacher probes ``make_input_curvature`` draws, (N, P, *shape): example i splits
    fold_in(key, i) into P keys (jaxcurv.curvature's documented key layout)."""

    def one(i):
        keys = jax.random.split(jax.random.fold_in(key, i), probes)
        return jax.vmap(lambda k: jax.random.rademacher(k, shape, jnp.float32))(keys)

    return np.asarray(jax.vmap(one)(jnp.arange(n, dtype=jnp.int32)))


def _torch_finite_difference(peer: _Torch, net, x, y, *, probes: int, h: float = _H,
                             given=None) -> Callable:
    """The authors' algorithm: per probe v = h·(r + 1e-7), r Rademacher, Δg = ∇ₓ[L(x + v) − L(x)]
    with L the batch-mean cross-entropy (two forward and two backward passes), Hv ≈ N·Δg/h;
    accumulates vᵀHv and ‖Hv‖² per example. ``given`` (P, N, C, H, W): fixed probes (the check);
    else r is drawn on the device each call."""
    torch = peer.module
    criterion = torch.nn.CrossEntropyLoss()
    n = x.shape[0]

    def run():
        trace = torch.zeros(n, device=x.device)
        trace_sq = torch.zeros(n, device=x.device)
        for p in range(probes):
            r = given[p] if given is not None else \
                torch.randint(0, 2, x.shape, device=x.device, dtype=x.dtype) * 2 - 1
            v = h * (r + 1e-7)
            xr = x.detach().requires_grad_()
            (dg,) = torch.autograd.grad(criterion(net(xr + v), y) - criterion(net(xr), y), xr)
            hv = dg * (n / h)
            trace += (r * hv).flatten(1).sum(1)
            trace_sq += hv.flatten(1).square().sum(1)
        out = (trace / probes).cpu().numpy(), (trace_sq / probes).cpu().numpy()
        peer.sync()
        return out

    return run


def _torch_exact_hvp(peer: _Torch, net, x, y, *, probes: int, given=None) -> Callable:
    """Exact HVPs in PyTorch: Hv = jvp(∇ₓ Σᵢ ℓᵢ)(x; v) (``torch.func``; eval-mode, no cross-example
    terms, so the batch-sum gradient holds every example's gradient), probes vmapped."""
    torch = peer.module
    from torch.func import grad, jvp, vmap

    criterion = torch.nn.CrossEntropyLoss(reduction="sum")
    gradient = grad(lambda z: criterion(net(z), y))
    hvps = vmap(lambda v: jvp(gradient, (x,), (v,))[1])

    def run():
        r = given if given is not None else \
            torch.randint(0, 2, (probes, *x.shape), device=x.device, dtype=x.dtype) * 2 - 1
        hv = hvps(r)
        hv = hv.detach()
        out = ((r * hv).flatten(2).sum(2).mean(0).cpu().numpy(),
               hv.flatten(2).square().sum(2).mean(0).cpu().numpy())
        peer.sync()
        return out

    return run


def section_curvature(inp: _Inputs, peer: _Torch) -> tuple[list[dict], dict]:
    s = inp.sizes
    n, key = len(inp.x), inp.key("probes")
    loss_fn = models.make_loss_fn(inp.model)
    estimate = make_input_curvature(loss_fn, num_probes=s.probes, batch_size=n)

    def ours():
        return estimate(inp.variables, inp.x, inp.y, key)

    setting = f"GELU CNN w={s.width}, 32×32×3, batch {n}, {s.probes} probes, tr(H²)"
    base = {"fd": _row("curvature", f"curvature, {setting}", "input_curvature (exact HVPs)",
                       f"authors' algorithm in PyTorch (finite differences, h = {_H:g})"),
            "hvp": _row("curvature", f"curvature, {setting}", "input_curvature (exact HVPs)",
                        "PyTorch exact HVPs (torch.func jvp of grad, probes vmapped)")}
    detail = {"model": f"cnn width {s.width} hidden {s.hidden} (GELU)", "batch": n,
              "num_probes": s.probes, "h": _H, "inputs": "CIFAR-10 test images"
              if not inp.data_info["fallback"] else "synthetic 32×32×3 images"}
    if peer.module is None:
        return [_missing(b, peer.reason) for b in base.values()], detail
    torch = peer.module
    net = _torch_cnn(peer, inp.variables, (32, 32, 3)).eval()
    xt, yt = _nchw(peer, inp.x), _labels(peer, inp.y)
    # check with the same probes: ours drawn on the host, laid out NCHW for PyTorch
    probes = _our_probes(key, n, inp.x.shape[1:], s.probes)                 # (N, P, H, W, C)
    given = torch.from_numpy(np.ascontiguousarray(probes.transpose(1, 0, 4, 2, 3))).to(peer.device)
    mine = ours()
    exact = _torch_exact_hvp(peer, net, xt, yt, probes=s.probes, given=given)()
    fd = _torch_finite_difference(peer, net, xt, yt, probes=s.probes, given=given)()
    checks = {
        "hvp": {"max_rel_diff_curvature": float(np.max(np.abs(exact[1] - mine.trace_sq)
                                                      / np.abs(mine.trace_sq))),
                "max_rel_diff_curvature_trace": float(np.max(np.abs(exact[0] - mine.trace))
                                            / np.max(np.abs(mine.trace))),
                "criterion": "same probes: max relative difference ≤ 1e-3 (float32)"},
        "fd": {"median_rel_diff_curvature": float(np.median(np.abs(fd[1] - mine.trace_sq)
                                                           / np.abs(mine.trace_sq))),
               "spearman_curvature": _spearman(fd[1], mine.trace_sq),
               "criterion": "same probes: median relative difference of tr(H²) ≤ 5 % and "
                            "Spearman ≥ 0.99 (finite differences carry O(h) truncation and "
                            "float32 cancellation error)"}}
    checks["hvp"]["passed"] = bool(checks["hvp"]["max_rel_diff_curvature"] <= 1e-3
                                   and checks["hvp"]["max_rel_diff_curvature_trace"] <= 1e-3)
    checks["fd"]["passed"] = bool(checks["fd"]["median_rel_diff_curvature"] <= 0.05
                                  and checks["fd"]["spearman_curvature"] >= 0.99)
    fns = {"ours": ours, "fd": _torch_finite_difference(peer, net, xt, yt, probes=s.probes),
           "hvp": _torch_exact_hvp(peer, net, xt, yt, probes=s.probes)}
    t = time_interleaved(fns, repeats=s.repeats)
    rows = [_timed_row(base[k], t["ours"], t[k], check=checks[k], unit="samples/s", work=n)
            for k in ("fd", "hvp")]
    detail["torch_threads"] = torch.get_num_threads()
    return rows, detail


# ----------------------------------------------------------------------------------------------
# DP-SGD


def _sgd(momentum: float = _MOMENTUM) -> tuple[OptimizerConfig, Any]:
    config = OptimizerConfig(name="sgd", learning_rate=_LR, momentum=momentum, nesterov=False,
                             weight_decay=0.0, schedule="constant")
    return config, make_optimizer(config, 1000)


def _torch_step(peer: _Torch, net, *, dp: bool, noise: float, batch_size: int) -> Callable:
    """One training step in PyTorch: SGD (lr, momentum as ours) on the mean cross-entropy;
    ``dp``: Opacus's GradSampleModule (per-example gradients by hooks) + DPOptimizer (clip C,
    noise σ·C, divided by the expected batch size), the pair make_private returns with
    poisson_sampling=False."""
    torch = peer.module
    module = net
    optimizer = torch.optim.SGD(net.parameters(), lr=_LR, momentum=_MOMENTUM)
    if dp:
        module = peer.opacus.GradSampleModule(net)
        optimizer = peer.opacus.optimizers.DPOptimizer(
            optimizer, noise_multiplier=noise, max_grad_norm=_CLIP,
            expected_batch_size=batch_size)
    criterion = torch.nn.CrossEntropyLoss()

    def step(x, y):
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(module(x), y)
        loss.backward()
        optimizer.step()
        peer.sync()
        return loss.detach()

    return step


def _our_steps(inp: _Inputs, noise: float) -> tuple[Any, dict[str, Callable]]:
    """(initial state, {"dp": step, "nonprivate": step}) jitted, SGD with momentum."""
    config, tx = _sgd()
    state = init_state(inp.model, tx, jax.random.PRNGKey(0), (32, 32, 3))
    state = state._replace(params=jax.tree.map(jnp.asarray, inp.variables["params"]))
    dp = DPPlan(l2_clip=_CLIP, noise_multiplier=noise, expected_batch_size=float(len(inp.x)))
    return state, {"dp": jax.jit(make_train_step(inp.model, tx, config=config, dp=dp)),
                   "nonprivate": jax.jit(make_train_step(inp.model, tx, config=config))}


def _step_check(inp: _Inputs, peer: _Torch, *, dp: bool) -> dict:
    """σ = 0: one step from the same weights on the same batch; the updates must agree."""
    state, steps = _our_steps(inp, noise=0.0)
    args = (jnp.asarray(inp.x), jnp.asarray(inp.y), jnp.ones(len(inp.x)), inp.key("dp_noise"))
    new, _ = steps["dp" if dp else "nonprivate"](state, *args)
    ours = jax.tree.map(lambda a, b: np.asarray(a) - np.asarray(b), new.params, state.params)
    net = _torch_cnn(peer, inp.variables, (32, 32, 3))
    before = _flax_params(net)
    _torch_step(peer, net, dp=dp, noise=0.0, batch_size=len(inp.x))(_nchw(peer, inp.x), _labels(peer, inp.y))
    theirs = jax.tree.map(lambda a, b: a - b, _flax_params(net), before)
    diff = _relative_difference(theirs, ours)
    return {"max_rel_diff_update": diff, "passed": bool(diff <= 1e-3),
            "criterion": "noise 0: one step from the same weights on the same batch, "
                         "max |Δθ_peer − Δθ_ours| / max |Δθ_ours| ≤ 1e-3"}


def section_dpsgd(inp: _Inputs, peer: _Torch) -> tuple[list[dict], dict]:
    s = inp.sizes
    n = len(inp.x)
    setting = f"GELU CNN w={s.width}, 32×32×3, batch {n}"
    state, steps = _our_steps(inp, noise=_SIGMA)
    args = (jnp.asarray(inp.x), jnp.asarray(inp.y), jnp.ones(n), inp.key("dp_noise"))
    fns = {name: (lambda f=f: f(state, *args)) for name, f in steps.items()}
    base = {"dp": _row("dpsgd", f"DP-SGD step, {setting}, C = {_CLIP:g}, σ = {_SIGMA:g}",
                       "make_train_step(dp=DPPlan)",
                       "Opacus (GradSampleModule + DPOptimizer, no Poisson sampling)"),
            "nonprivate": _row("dpsgd", f"non-private step, {setting}", "make_train_step",
                               "PyTorch (SGD step)")}
    detail = {"model": f"cnn width {s.width} hidden {s.hidden} (GELU)", "batch": n,
              "l2_clip": _CLIP, "noise_multiplier": _SIGMA, "optimizer": "SGD lr 0.05 momentum 0.9",
              "poisson_sampling": False}
    peer_fns, checks, reasons = {}, {}, {}
    if peer.module is None:
        reasons = {"dp": peer.reason, "nonprivate": peer.reason}
    else:
        xt, yt = _nchw(peer, inp.x), _labels(peer, inp.y)
        checks["nonprivate"] = _step_check(inp, peer, dp=False)
        step = _torch_step(peer, _torch_cnn(peer, inp.variables, (32, 32, 3)), dp=False, noise=0,
                           batch_size=n)
        peer_fns["nonprivate"] = lambda step=step: step(xt, yt)
        if peer.opacus is None:
            reasons["dp"] = peer.opacus_reason
        else:
            checks["dp"] = _step_check(inp, peer, dp=True)
            dp_step = _torch_step(peer, _torch_cnn(peer, inp.variables, (32, 32, 3)), dp=True,
                                  noise=_SIGMA, batch_size=n)
            peer_fns["dp"] = lambda step=dp_step: step(xt, yt)
        detail["opacus"] = getattr(peer.opacus, "__version__", None)
    t = time_interleaved({**fns, **{f"peer_{k}": f for k, f in peer_fns.items()}},
                         repeats=s.repeats)
    rows = []
    for k in ("dp", "nonprivate"):
        if k in reasons:
            rows.append(_missing(base[k], reasons[k]))
        else:
            rows.append(_timed_row(base[k], t[k], t[f"peer_{k}"], check=checks[k],
                                   unit="steps/s", work=1.0))
    overhead = t["dp"].median / t["nonprivate"].median
    rows.append(_row("dpsgd", f"cost of privacy: our DP-SGD step / our non-private step, "
                     f"{setting}", "make_train_step(dp=DPPlan)", "make_train_step",
                     status="ok", ours_median_s=t["dp"].median,
                     peer_median_s=t["nonprivate"].median, overhead=overhead,
                     target="≤ 2", check={"passed": True, "criterion": "same process, batch"},
                     speedup=None, load_avg_1min=t["dp"].load))
    if "peer_dp" in t and "peer_nonprivate" in t:
        detail["opacus_overhead"] = t["peer_dp"].median / t["peer_nonprivate"].median
    detail["our_overhead"] = overhead
    return rows, detail


# ----------------------------------------------------------------------------------------------
# ensembles


def _recipe(sizes: Sizes) -> dict:
    config, _ = _sgd()
    return dict(epochs=sizes.ens_epochs, batch_size=sizes.ens_batch, optimizer=config,
                augment=False, label_smoothing=0.0, compute_dtype=None)


class _TorchMembers:
    """The members in PyTorch, from our initial weights, on the same subsets and recipe (SGD with
    momentum on the mean cross-entropy of shuffled batches of B; ⌈n/B⌉ steps per epoch)."""

    def __init__(self, peer: _Torch, inp: _Inputs, subsets, inits):
        torch = self.torch = peer.module
        self.peer, self.sizes = peer, inp.sizes
        self.images, self.labels = _nchw(peer, inp.train.images), _labels(peer, inp.train.labels)
        self.test_x, self.test_y = _nchw(peer, inp.test.images), _labels(peer, inp.test.labels)
        self.subsets = [torch.from_numpy(np.asarray(s, np.int64)).to(peer.device)
                        for s in subsets]
        self.steps = -(-max(len(s) for s in subsets) // inp.sizes.ens_batch)
        self.generator = torch.Generator().manual_seed(inp.seed)
        self.criterion = torch.nn.CrossEntropyLoss()
        self.nets = [_torch_cnn(peer, inits[0], (32, 32, 3))]
        for variables in inits[1:]:  # one class for all (torch.func stacks modules of one class)
            self.nets.append(copy.deepcopy(self.nets[0]))
            self.nets[-1].load_state_dict(_torch_cnn(peer, variables, (32, 32, 3)).state_dict())

    def _perm(self, subset):
        return self.torch.randperm(len(subset), generator=self.generator).to(self.peer.device)

    def _batch(self, subset, perm, step: int):
        b = self.sizes.ens_batch
        idx = subset[perm[step * b:(step + 1) * b]]
        return self.images[idx], self.labels[idx]

    def loop(self) -> tuple[list[float], list[float]]:
        """A loop over members, each trained for every epoch: (epoch times after each member's
        first, test accuracies)."""
        torch, times, acc = self.torch, [], []
        for net, subset in zip(self.nets, self.subsets):
            opt = torch.optim.SGD(net.parameters(), lr=_LR, momentum=_MOMENTUM)
            stamps = []
            for _ in range(self.sizes.ens_epochs):
                perm = self._perm(subset)
                for step in range(-(-len(subset) // self.sizes.ens_batch)):
                    xb, yb = self._batch(subset, perm, step)
                    opt.zero_grad(set_to_none=True)
                    self.criterion(net(xb), yb).backward()
                    opt.step()
                self.peer.sync()
                stamps.append(time.perf_counter())
            times.extend(np.diff(stamps).tolist())
            with torch.no_grad():
                acc.append(float((net(self.test_x).argmax(1) == self.test_y).float().mean()))
        return times, acc

    def stacked(self, *, probe_steps: int | None = None) -> tuple[list[float], list[float]]:
        """All members at once: parameters stacked (``stack_module_state``), ``functional_call``
        vmapped over members, one SGD over the stacked tensors (elementwise, so per member the
        same update). ``probe_steps``: time that many steps only (per-step times, no accuracy);
        else train every epoch: (epoch times after the first, test accuracies)."""
        torch = self.torch
        from torch.func import functional_call, stack_module_state, vmap

        params, buffers = stack_module_state(self.nets)
        params = {k: v.detach().requires_grad_() for k, v in params.items()}
        template = self.nets[0]
        forward = vmap(lambda p, b, x: functional_call(template, (p, b), (x,)))
        opt = torch.optim.SGD(list(params.values()), lr=_LR, momentum=_MOMENTUM)
        k, stamps, done = len(self.nets), [], 0
        epochs = 1 if probe_steps else self.sizes.ens_epochs
        for _ in range(epochs):
            # a member with fewer examples wraps around to keep the members' batches one shape
            perms = [self._perm(s).repeat(2) for s in self.subsets]
            for step in range(self.steps if not probe_steps else probe_steps):
                xs, ys = zip(*(self._batch(s, p, step % self.steps)
                               for s, p in zip(self.subsets, perms)))
                opt.zero_grad(set_to_none=True)
                logits = forward(params, buffers, torch.stack(xs))
                # Σ over members of each member's mean loss: member k's gradient is its own
                self.criterion(logits.flatten(0, 1), torch.stack(ys).flatten()).mul(k).backward()
                opt.step()
                done += 1
                if probe_steps:
                    self.peer.sync()
                    stamps.append(time.perf_counter())
            if not probe_steps:
                self.peer.sync()
                stamps.append(time.perf_counter())
        if probe_steps:
            return np.diff(stamps).tolist(), []
        with torch.no_grad():
            logits = forward(params, buffers, self.test_x.expand(k, *self.test_x.shape))
            acc = (logits.argmax(-1) == self.test_y).float().mean(1).cpu().numpy().tolist()
        return np.diff(stamps).tolist(), acc


def _members_row(base: dict, ours_per_hour: float, ours_member_epoch_s: float, per_hour: float,
                 member_epoch_s: float, ours_acc, acc, target: float, **extra) -> dict:
    check = {"ours_mean_test_accuracy": float(np.mean(ours_acc)),
             "peer_mean_test_accuracy": float(np.mean(acc)) if len(acc) else None,
             "target": target, "criterion": "both mean test accuracies ≥ the target"}
    check["passed"] = bool(len(acc) and min(np.mean(ours_acc), np.mean(acc)) >= target)
    return {**base, "status": "ok" if check["passed"] else "check failed", "check": check,
            "unit": "members/hour", "ours_rate": ours_per_hour, "peer_rate": per_hour,
            "ours_median_s": ours_member_epoch_s, "peer_median_s": member_epoch_s,
            "speedup": ours_per_hour / per_hour, "load_avg_1min": load_average(), **extra}


def section_ensemble(inp: _Inputs, peer: _Torch) -> tuple[list[dict], dict]:
    s = inp.sizes
    k = s.ens_members
    masks = data.subset_masks(len(inp.train), k, fraction=0.5, seed=inp.seed)
    subsets = [np.flatnonzero(m) for m in masks]
    inits: list[dict] = []

    def record_init(variables):  # the members' initial weights, for the peers to start from
        inits.append(jax.tree.map(np.asarray, variables))
        return variables

    ens, stamps, wall = bench_ensemble.timed_train(
        inp.model, inp.train, masks, inp.key("ensemble"), recipe=_recipe(s),
        init_transform=record_init)
    ours_epoch = statistics.median(stamps.steady_epoch_times())
    per_chunk = max(stamps.members.values())
    ours_member_epoch = ours_epoch / per_chunk
    ours_per_hour = 3600.0 / (s.ens_epochs * ours_member_epoch)
    ours_acc = ensemble.accuracy(ens, inp.test)
    setting = (f"GELU CNN w={s.width}, {k} members on random halves of {len(inp.train):,} "
               f"{inp.data_info['dataset']} images, {s.ens_epochs} epochs, batch {s.ens_batch}")
    base = {"loop": _row("ensemble", f"members/hour, {setting}", "ensemble.train",
                         "PyTorch loop over members"),
            "stacked": _row("ensemble", f"members/hour, {setting}", "ensemble.train",
                            "torch.func stacked members (vmap of functional_call)")}
    detail = {"members": k, "epochs": s.ens_epochs, "batch_size": s.ens_batch,
              "recipe": "SGD lr 0.05 momentum 0.9, constant rate, no augmentation, the same "
                        "initial weights", "target_mean_test_accuracy": s.ens_target,
              "timing": "members/hour = 3600 / (epochs × median steady epoch time per member), "
                        "each member's (or stack's) first epoch excluded",
              "data": inp.data_info,
              "ours": {"steady_epoch_s": ours_epoch, "members_per_chunk": per_chunk,
                       "members_per_hour": ours_per_hour, "wall_s": wall,
                       "test_accuracy": ours_acc.tolist()}}
    if peer.module is None:
        return [_missing(b, peer.reason) for b in base.values()], detail
    members = _TorchMembers(peer, inp, subsets, inits)
    start = time.perf_counter()
    loop_times, loop_acc = members.loop()
    loop_epoch = statistics.median(loop_times)
    loop_per_hour = 3600.0 / (s.ens_epochs * loop_epoch)
    detail["loop"] = {"steady_epoch_s": loop_epoch, "members_per_hour": loop_per_hour,
                      "wall_s": time.perf_counter() - start, "test_accuracy": loop_acc}
    rows = [_members_row(base["loop"], ours_per_hour, ours_member_epoch, loop_per_hour,
                         loop_epoch, ours_acc, loop_acc, s.ens_target)]
    # torch.func stacked: timed over a few steps first; trained to the target only if faster
    start = time.perf_counter()
    step_times, _ = members.stacked(probe_steps=s.repeats + 2)
    stacked_epoch = statistics.median(step_times[1:]) * members.steps / k   # per member
    detail["stacked"] = {"probe_step_s": step_times, "member_epoch_s_from_steps": stacked_epoch}
    if stacked_epoch < loop_epoch:
        times, acc = members.stacked()
        stacked_epoch = statistics.median(times) / k
        detail["stacked"].update(test_accuracy=acc, trained=True)
    else:
        acc = []
        detail["stacked"].update(trained=False, note=(
            f"slower than the PyTorch loop per member-epoch ({stacked_epoch:.3g} s vs "
            f"{loop_epoch:.3g} s, from {s.repeats} timed steps), so not trained to the target; "
            "the loop is the peer"))
    stacked_per_hour = 3600.0 / (s.ens_epochs * stacked_epoch)
    detail["stacked"].update(members_per_hour=stacked_per_hour,
                             wall_s=time.perf_counter() - start)
    row = _members_row(base["stacked"], ours_per_hour, ours_member_epoch, stacked_per_hour,
                       stacked_epoch, ours_acc, acc, s.ens_target)
    if not detail["stacked"]["trained"]:
        row.update(status="slower than the loop", check={
            "passed": None, "criterion": detail["stacked"]["note"]})
    rows.append(row)
    return rows, detail


# ----------------------------------------------------------------------------------------------
# attacks: the published reference code, re-written from its documented math


def lira_reference(keep: np.ndarray, scores: np.ndarray, check_scores: np.ndarray, *,
                   online: bool = True) -> np.ndarray:
    """LiRA as the authors' ``plot.py`` computes it (``generate_ours`` / ``generate_ours_offline``,
    research/mi_lira_2021 of tensorflow/privacy), returned as a membership score (higher =
    member; the published ROC negates its prediction).

    keep (K, N) bool, scores (K, N, A) shadow statistics, check_scores (N, A) the target's.
    A Python loop over the N examples gathers each one's IN and OUT shadow statistics (truncated
    to the smallest group size); centres are medians, spreads np.std (ddof 0) + 1e-30; online:
    mean over A of log N(t; IN) − log N(t; OUT); offline: −mean over A of log N(t; OUT).
    """
    gathered_in, gathered_out = [], []
    for j in range(scores.shape[1]):
        gathered_in.append(scores[keep[:, j], j, :])
        gathered_out.append(scores[~keep[:, j], j, :])
    out_size = min(map(len, gathered_out))
    out = np.array([g[:out_size] for g in gathered_out])
    mu_out, sd_out = np.median(out, 1), np.std(out, 1)
    log_out = stats.norm.logpdf(check_scores, mu_out, sd_out + 1e-30)
    if not online:
        return -log_out.mean(1)
    in_size = min(map(len, gathered_in))
    inn = np.array([g[:in_size] for g in gathered_in])
    log_in = stats.norm.logpdf(check_scores, np.median(inn, 1), np.std(inn, 1) + 1e-30)
    return (log_in - log_out).mean(1)


def _out_signals(signals: np.ndarray, member: np.ndarray, target: int, num_ref: int) -> np.ndarray:
    """privacy_meter's choice of OUT references: the columns other than the target and its
    paired model (target ± 1), the first 2·num_ref of them; IN entries zeroed; per row the
    num_ref largest values kept."""
    paired = target + 1 if target % 2 == 0 else target - 1
    cols = [i for i in range(signals.shape[1]) if i not in (target, paired)][:2 * num_ref]
    masked = signals[:, cols] * ~member[:, cols]
    return -np.sort(-masked, axis=1)[:, :num_ref]


def rmia_reference(signals: np.ndarray, population: np.ndarray, member: np.ndarray, *,
                   target: int, num_ref: int, a: float, block: int = 2_000) -> np.ndarray:
    """privacy_meter's RMIA (``run_rmia``, offline): p(x) = ½(1 + a)·mean OUT + ½(1 − a) over the
    OUT references of :func:`_out_signals` (the population is OUT of every model), ratio
    r = p(x|θ)/p(x), score = fraction of population samples z with r_x / r_z > 1.

    signals (N, M) and population (Z, M): true-class probabilities under M models; member (N, M)
    bool. The published code forms the N × Z ratio matrix at once; here ``block`` target rows at
    a time (the same arithmetic in bounded memory)."""
    mean_x = (1 + a) / 2 * _out_signals(signals, member, target, num_ref).mean(1) + (1 - a) / 2
    mean_z = (1 + a) / 2 * _out_signals(population, np.zeros(population.shape, bool), target,
                                        num_ref).mean(1) + (1 - a) / 2
    ratio_x = signals[:, target] / mean_x
    ratio_z = population[:, target] / mean_z
    return np.concatenate([np.average(ratio_x[i:i + block, None] / ratio_z > 1.0, axis=1)
                           for i in range(0, len(ratio_x), block)])


def _attack_inputs(sizes: Sizes, seed: int) -> dict:
    """Synthetic statistics (bench.mia) for 2 + K models: model 0 the target (on a random half),
    model 1 its pair (the other half; privacy_meter skips it), models 2… the K shadows /
    references, each example IN for exactly K/2 of them (so the published LiRA code's
    truncation to the smallest IN/OUT group and privacy_meter's choice of OUT references drop
    nothing)."""
    n, k, a, z = (sizes.attack_targets, sizes.attack_shadows, sizes.attack_augmentations,
                  sizes.attack_population)
    target_in = data.subset_masks(n, 2, fraction=0.5, seed=seed + 1)[0]
    in_all = np.vstack([target_in, data.subset_masks(n, k, fraction=0.5, seed=seed)])
    st = bench_mia.make_statistics(n, k, a, z, seed, in_all=in_all)
    rng = np.random.default_rng(seed + 1)
    prob_pair = np.clip(st["prob_t"][:, 0] + rng.normal(0, 0.01, n), 1e-6, 1 - 1e-6)
    pop_pair = np.clip(st["pop_t"][:, 0] + rng.normal(0, 0.01, z), 1e-6, 1 - 1e-6)
    signals = np.column_stack([st["prob_t"][:, 0], prob_pair, st["prob_s"][..., 0].T])
    population = np.column_stack([st["pop_t"][:, 0], pop_pair, st["pop_s"][..., 0].T])
    member = np.column_stack([st["target_in"], ~st["target_in"], st["shadow_in"].T])
    return {**st, "signals": signals, "population": population, "member": member}


def section_attacks(inp: _Inputs, peer: _Torch) -> tuple[list[dict], dict]:
    del peer  # numpy against numpy
    s = inp.sizes
    st = _attack_inputs(s, inp.seed)
    k, a = s.attack_shadows, s.attack_augmentations
    num_ref = k // 2
    offline_a = 0.3
    # privacy_meter keeps per population sample the num_ref largest of 2·num_ref OUT signals:
    # the same references for ours, by marking the others as not OUT (IN) for the population
    ref_z = st["population"][:, 2:].T                                            # (K, Z)
    rank = np.argsort(np.argsort(-ref_z, axis=0, kind="stable"), axis=0, kind="stable")
    pop_in = rank >= num_ref
    ours = {
        "lira_online": lambda: mia.lira(st["conf_t"], st["conf_s"], st["shadow_in"],
                                        online=True, center="median"),
        "lira_offline": lambda: mia.lira(st["conf_t"], st["conf_s"], st["shadow_in"],
                                         online=False, center="median",
                                         offline_test="two_sided"),
        "rmia": lambda: mia.rmia(st["signals"][:, 0], st["signals"][:, 2:].T,
                                 st["population"][:, 0], ref_z,
                                 reference_in=st["shadow_in"], population_reference_in=pop_in,
                                 online=False, offline_a=offline_a),
    }
    keep = st["shadow_in"]
    theirs = {
        "lira_online": lambda: lira_reference(keep, st["conf_s"], st["conf_t"], online=True),
        "lira_offline": lambda: lira_reference(keep, st["conf_s"], st["conf_t"], online=False),
        "rmia": lambda: rmia_reference(st["signals"], st["population"], st["member"], target=0,
                                       num_ref=num_ref, a=offline_a),
    }
    scale = {"lira_online": a, "lira_offline": a, "rmia": 1}  # ours sums over A, theirs averages
    checks = {}
    for name in ours:
        mine, ref = ours[name](), theirs[name]()
        diff = float(np.max(np.abs(mine - scale[name] * ref)))
        tol = 1.0 / s.attack_population if name == "rmia" else 1e-9 * max(np.max(np.abs(mine)), 1)
        checks[name] = {"max_abs_diff": diff, "tolerance": tol, "passed": bool(diff <= tol),
                        "auroc": float(mia.roc_metrics(mine, st["target_in"])["auroc"]),
                        "criterion": ("ours = A × the published mean over augmentations"
                                      if scale[name] > 1 else
                                      "fractions of the population within one sample (1/Z)")}
    t = time_interleaved({**ours, **{f"peer_{k2}": f for k2, f in theirs.items()}},
                         repeats=s.repeats)
    setting = (f"{s.attack_targets:,} examples × {k} shadows × {a} augmentations")
    labels = {
        "lira_online": ("LiRA online", "mia.lira(center='median')",
                        "LiRA authors' plot.py generate_ours (numpy)"),
        "lira_offline": ("LiRA offline", "mia.lira(online=False, offline_test='two_sided')",
                         "LiRA authors' plot.py generate_ours_offline (numpy)"),
        "rmia": (f"RMIA offline (a = {offline_a:g}, population {s.attack_population:,})",
                 "mia.rmia(online=False)", "privacy_meter run_rmia (numpy)")}
    rows = [_timed_row(_row("attacks", f"{labels[name][0]}, {setting}", *labels[name][1:]),
                       t[name], t[f"peer_{name}"], check=checks[name], unit="examples/s",
                       work=s.attack_targets) for name in ours]
    detail = {"targets": s.attack_targets, "shadows": k, "augmentations": a,
              "population": s.attack_population, "offline_a": offline_a,
              "statistics": "bench.mia.make_statistics (synthetic, balanced IN/OUT, a member "
                            "effect)", "num_reference_models": num_ref}
    return rows, detail


# ----------------------------------------------------------------------------------------------
# how close to the limit


def _forward_flops(image_shape, width: int, hidden: int, classes: int = 10) -> float:
    """Multiply-adds × 2 of the CNN's convolutions and dense layers for one example."""
    h, w, c = image_shape
    h2, w2 = -(-h // 2), -(-w // 2)
    ph, pw = max(1, h2 // 4), max(1, w2 // 4)
    flat = (h2 // ph) * (w2 // pw) * 2 * width
    macs = (h * w * 9 * c * width + h2 * w2 * 9 * width * 2 * width + flat * hidden
            + hidden * classes)
    return 2.0 * macs


def _xla_flops(fn, *args) -> float:
    analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0]
    return float(analysis.get("flops", float("nan")))


def section_limit(inp: _Inputs, peer: _Torch) -> tuple[list[dict], dict]:
    del peer
    s = inp.sizes
    n = len(inp.x)
    loss_fn = models.make_loss_fn(inp.model)
    curvature = make_curvature_fn(loss_fn, num_probes=s.probes)
    variables = jax.tree.map(jnp.asarray, inp.variables)
    x, y, key = jnp.asarray(inp.x), jnp.asarray(inp.y), inp.key("probes")
    xla = _xla_flops(curvature, variables, x, y, key) / n
    xla_forward = _xla_flops(lambda v, z: inp.model.apply(v, z), variables, x) / n
    forward = _forward_flops((32, 32, 3), s.width, s.hidden)
    analytic = s.probes * 4.0 * forward
    compiled = jax.jit(curvature)
    m = s.matmul
    a = jax.random.normal(jax.random.PRNGKey(0), (m, m), jnp.float32)
    matmul = jax.jit(lambda u, v: u @ v)
    t = time_interleaved({"curvature": lambda: compiled(variables, x, y, key),
                          "matmul": lambda: matmul(a, a)}, repeats=s.repeats)
    achieved = xla * n / t["curvature"].median
    peak = 2.0 * m ** 3 / t["matmul"].median
    row = _row("limit", f"how close to the limit: curvature, GELU CNN w={s.width}, batch {n}, "
               f"{s.probes} probes", "make_curvature_fn (jitted)",
               f"float32 matmul {m}×{m} (measured peak)", status="ok",
               check={"passed": True, "criterion": "XLA cost analysis of the compiled program"},
               xla_flops_per_sample=xla, analytic_flops_per_sample=analytic,
               xla_over_analytic=xla / analytic, forward_flops_analytic=forward,
               forward_flops_xla=xla_forward, achieved_flops_per_s=achieved,
               peak_matmul_flops_per_s=peak, fraction_of_peak=achieved / peak,
               ours_median_s=t["curvature"].median, peer_median_s=t["matmul"].median,
               speedup=None, load_avg_1min=t["curvature"].load)
    detail = {"analytic": "P × 4F: per probe one HVP = 2 forward + 2 input-backward passes "
                          "(no weight gradients), F = 2 × multiply-adds of the convolutions "
                          "and dense layers; XLA counts the primal forward/backward once per "
                          "example (shared by the vmapped probes) and the elementwise work",
              "matmul_n": m}
    return [row], detail


# ----------------------------------------------------------------------------------------------
# the run, the table, README


SECTION_FNS = {"curvature": section_curvature, "dpsgd": section_dpsgd,
               "ensemble": section_ensemble, "attacks": section_attacks, "limit": section_limit}


def _environment(peer: _Torch) -> dict:
    env = environment()
    env["cores_used"] = cores()
    if peer.module is not None:
        env["torch"] = peer.module.__version__
        env["torch_threads"] = peer.module.get_num_threads()
        env["torch_device"] = peer.device
    if peer.opacus is not None:
        env["opacus"] = peer.opacus.__version__
    return env


def run(sizes: Sizes, *, out: str | os.PathLike, seed: int = 0, data_dir=None,
        sections=SECTIONS, tiny: bool = False, splits=None) -> dict:
    """Every section in ``sections``, in this process; writes DIR/peers.json (after each section)
    and DIR/peers.md; returns the result. A failing section is recorded (status "failed", the
    traceback), not raised. ``splits``: (train, test, {"dataset", "fallback"[, "note"]}) already
    loaded, else CIFAR-10 is looked up in ``data_dir`` / $JAXCURV_DATA_DIR."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    peer = _import_torch()
    print(f"bench.peers — {describe_device()}; torch: "
          f"{peer.module.__version__ if peer.module else 'missing'}", flush=True)
    inp = _inputs(sizes, seed, data_dir, splits)
    result: dict[str, Any] = {
        "environment": _environment(peer),
        "command": "python -m bench.peers " + " ".join(sys.argv[1:]) if sys.argv else "",
        "tiny": tiny, "sizes": dataclasses.asdict(sizes), "data": inp.data_info,
        "rows": [], "sections": {}}
    for name in sections:
        section_start = time.perf_counter()
        try:
            rows, detail = SECTION_FNS[name](inp, peer)
        except Exception as err:  # noqa: BLE001 - one failing section must not lose the others
            traceback.print_exc()
            rows = [_row(name, name, "", "", status="failed", speedup=None,
                         error=f"{type(err).__name__}: {err}")]
            detail = {"traceback": traceback.format_exc()[-4000:]}
        detail["wall_s"] = time.perf_counter() - section_start
        result["rows"].extend(rows)
        result["sections"][name] = detail
        result["wall_s"] = time.perf_counter() - start
        report.write_json(out / "peers.json", result)
        B.print_table(f"{name} — {describe_device()}", [_table_cells(r) for r in rows])
    result["environment"]["load_avg_1min_end"] = load_average()
    result["headlines"] = _headlines(result["rows"])
    result["wall_s"] = time.perf_counter() - start
    report.write_json(out / "peers.json", result)
    report.write_text_atomic(out / "peers.md", render_markdown(result))
    print(f"\nwrote {out / 'peers.json'} and {out / 'peers.md'} in {result['wall_s']:.0f} s",
          flush=True)
    return result


def _headlines(rows: list[dict]) -> dict[str, dict]:
    """docs/measurements.md's figures: each ratio (the interval over the interleaved repeats'
    paired ratios, min–max), the cost of privacy and the limit figures."""
    out = {}
    for row in rows:
        if row.get("status") not in ("ok", "slower than the loop"):
            continue
        what = f"{row['name']}: {row['ours']} vs {row['peer']}"
        if row["section"] == "limit":
            out["limit: XLA FLOPs / analytic"] = headline(
                row["xla_over_analytic"], f"{what}: XLA cost-analysis FLOPs per sample over the "
                "analytical count of one HVP per probe (4F)", unit="×")
            out["limit: fraction of matmul peak"] = headline(
                row["fraction_of_peak"], f"{what}: achieved FLOP/s over the measured float32 "
                "matmul FLOP/s")
        elif "overhead" in row:
            out["dpsgd: cost of privacy"] = headline(row["overhead"], what + " (target ≤ 2)",
                                                     unit="×")
        else:
            paired = [p / o for p, o in zip(row.get("peer_times_s", ()),
                                            row.get("ours_times_s", ()))]
            out[f"{row['section']}: {row['peer']}"] = headline(
                row["speedup"], f"{what}: the peer's median time over ours",
                interval=[min(paired), max(paired)] if paired else None,
                over=f"{len(paired)} interleaved repeats, min–max" if paired else
                "median steady epoch times", unit="×")
    return out


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if value != value:
            return "nan"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}"
    return str(value)


def _rate(row: dict, key: str) -> str:
    value = row.get(key)
    return "—" if value is None else f"{_fmt(value)} {row.get('unit', '')}".strip()


def _table_cells(row: dict) -> dict:
    """One table line: what, ours, peer, rates, speedup (or overhead/limit figures), check."""
    status = row.get("status")
    if status == "missing":
        result = f"missing: {row.get('reason', '')}"
    elif status == "failed":
        result = f"failed: {row.get('error', '')}"
    elif row["section"] == "limit":
        result = (f"XLA {_fmt(row['xla_flops_per_sample'] / 1e6)} MFLOP/sample = "
                  f"{_fmt(row['xla_over_analytic'])} × analytic; "
                  f"{_fmt(row['achieved_flops_per_s'] / 1e9)} GFLOP/s = "
                  f"{_fmt(100 * row['fraction_of_peak'])} % of matmul peak")
    elif "overhead" in row:
        result = f"{_fmt(row['overhead'])}× (target {row['target']})"
    else:
        result = f"**{_fmt(row['speedup'], 3)}×**"
    check = row.get("check") or {}
    return {"comparison": row["name"], "ours": row["ours"], "peer": row["peer"],
            "ours rate": _rate(row, "ours_rate"), "peer rate": _rate(row, "peer_rate"),
            "speedup (peer time / ours)": result,
            "checked": ("—" if check.get("passed") is None else
                        "yes" if check["passed"] else "NO"),
            "status": status}


def render_markdown(result: dict, *, heading: str | None = None) -> str:
    """The table of a run (markdown), with its device, command, date and load."""
    env = result["environment"]
    lines = [heading] if heading else []
    torch_v = env.get("torch", "not installed")
    lines += [f"Device: {describe_device(env)}; PyTorch {torch_v} with "
              f"{env.get('torch_threads', '—')} threads, Opacus {env.get('opacus', '—')}; "
              f"load average {_fmt(env['load_avg_1min'])} at the start, "
              f"{_fmt(env.get('load_avg_1min_end'))} at the end.",
              f"Command: `{result['command']}` ({env.get('date', '')}, commit "
              f"{env.get('commit') or 'not recorded'}, "
              f"{_fmt(result.get('wall_s'))} s{', toy sizes' if result.get('tiny') else ''}).",
              ""]
    cells = [_table_cells(r) for r in result["rows"]]
    cols = ["comparison", "ours", "peer", "ours rate", "peer rate", "speedup (peer time / ours)",
            "checked"]
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "---|" * len(cols))
    for c in cells:
        lines.append("| " + " | ".join(str(c[k]).replace("|", "\\|") for k in cols) + " |")
    return "\n".join(lines) + "\n"


def render_readme(readme: str | os.PathLike, peers_json: str | os.PathLike) -> Path:
    """Rewrite the table between README_BEGIN and README_END in ``readme`` from a peers.json."""
    import json

    readme = Path(readme)
    result = json.loads(Path(peers_json).read_text())
    text = readme.read_text()
    pattern = re.compile(re.escape(README_BEGIN) + r".*?" + re.escape(README_END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{readme} has no '{README_BEGIN}' … '{README_END}' block to replace")
    block = (f"{README_BEGIN}\n{render_markdown(result)}\nRegenerate from `{peers_json}` with "
             f"`python -m bench.peers --render {readme.name} --source {peers_json}`.\n{README_END}")
    report.write_text_atomic(readme, pattern.sub(lambda _: block, text))
    return readme


@dataclasses.dataclass(frozen=True)
class PeersBench(DataFolder, B.BenchSettings):
    """What to compare and where the results go; ``--render`` only rewrites a README's table."""

    out: str | None = setting(None, "folder for peers.json and peers.md", metavar="DIR",
                              none="required, unless --render")
    tiny: bool = setting(False, "toy sizes (the test; a CPU run of about a minute)")
    sections: tuple[str, ...] = setting(SECTIONS, "the comparisons to run")
    render: str | None = setting(None, "rewrite this README's performance table from --source "
                                 "and exit", metavar="README")
    source: str | None = setting(None, "the peers.json that --render reads", metavar="PEERS_JSON")

    def check(self) -> None:
        B.check_choices("sections", self.sections, SECTIONS)
        if self.render and not self.source:
            raise ConfigError("--render needs --source PEERS_JSON")
        if not self.render and not self.out:
            raise ConfigError("--out DIR is required (or --render README --source PEERS_JSON)")


def main(config: PeersBench) -> int:
    if config.render:
        print(f"rewrote {render_readme(config.render, config.source)}")
        return 0
    result = run(TINY if config.tiny else FULL, out=config.out, seed=config.seed,
                 data_dir=config.data_dir, sections=config.sections, tiny=config.tiny)
    return 1 if any(r.get("status") in ("failed", "check failed") for r in result["rows"]) else 0


if __name__ == "__main__":
    B.cli(PeersBench, main, name="peers", description=__doc__.split("\n\n")[0])
