"""Benchmark: the same small audit in one process and in a two-process job on this machine
(``jaxcurv.distributed``: 127.0.0.1, one fake CPU device per process), wall-time ratio printed,
and a projection of how member training and curvature scale to 8 hosts.

    python -m bench.distributed --quick      # CPU, a few minutes
    python -m bench.distributed              # a larger audit

What runs where. A job of P processes splits the K members into contiguous blocks of ⌈K/P⌉
(``distributed.process_members``). Member training and member curvature (white-box and
zero-order) run each member where its block lives, keys derived from the global member id, so
**training and curvature exchange nothing per step**. Communication happens at three points:

- end of training: parameters and per-epoch records of every member, gathered by every process:
  K·(4·n_params + E_r·(5N + 12)) bytes (E_r recorded epochs: correctness 1 B + loss 4 B per
  example, three float32 summaries);
- each saved checkpoint: the chunk states of all processes (params + Adam moments, 12·n_params
  bytes per member), written once by orbax from process 0 — over a run K·12·n_params·S bytes for
  S saves;
- end of each curvature stage: Curvature (4 float32 fields, 16·K·N bytes) and zero-order
  curvature (M·N·8 bytes in float64 on CPU, 4 on GPU/TPU).

For the default audit (MLP 64→512→512→10, n_params = 301,066; K = 32, N = 1438 digits, E = 60,
E_r = S = 12, M = 8): 38.5 MB of parameters, 2.8 MB of records, 0.74 MB of curvature, 0.09 MB of
zero-order curvature, and 1.39 GB of checkpoint state over the run (about 1.1 s at 10 Gb/s).

Projection to P hosts. Stages split over members take ⌈K/P⌉/K of their one-process time;
loading the data, predictions of every member (A views), proxies, attacks and the report run in
every process (they are seconds), plus the transfers above: T(P) ≈ T_split·⌈K/P⌉/K + T_rest +
bytes/bandwidth. With K = 32 and 8 hosts the split stages are 8× faster (4 members per host);
for K not a multiple of P the ⌈K/P⌉ padding costs up to one member per host. The script prints
T(P) for P = 1, 2, 4, 8 from the measured one-process stage times. Two processes on this
machine share its cores, so the measured ratio shows the overhead (start-up, compiling twice,
the gathers), not the speed-up of two hosts.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import resource
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

if not __package__:  # python bench/distributed.py from a checkout: the repository root on the path
    sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from jaxcurv.workflow import Timer, load_average  # noqa: E402
from jaxcurv.workflow import benchmark as B  # noqa: E402
from jaxcurv.workflow.settings import setting  # noqa: E402

_SPLIT = ("train", "curvature", "zero_order")  # stages split over members
_RUN = ("import json, sys; from jaxcurv.workflow import AuditConfig, run_audit; "
        "run_audit(AuditConfig(**json.loads(sys.argv[1])))")


@dataclasses.dataclass(frozen=True)
class DistributedBench(B.BenchConfig):
    """Settings of ``python -m bench.distributed``."""

    repeats: int = setting(1, "rounds of the two audits (1 process, then 2 processes); the "
                           "median wall time is reported", low=1, high=1_000)
    timeout: int = setting(1800, "seconds per audit run", low=1, high=1_000_000)


def _settings(quick: bool, seed: int) -> dict:
    """The audit both runs make (fresh output folders, nothing cached)."""
    if quick:
        return dict(models=6, epochs=2, max_examples=300, num_probes=2, zero_order=False,
                    bootstrap=0, seed=seed)
    return dict(models=8, epochs=6, max_examples=600, num_probes=4, zero_order=True,
                zero_order_members=8, bootstrap=0, seed=seed)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _audit(settings: dict, out: Path, processes: int, *, timeout: int) -> dict:
    """Wall and CPU seconds of the audit in ``processes`` processes, and process 0's stage
    timings (summary.json)."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1",
               JAX_PLATFORMS="cpu")
    port = _free_port()
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    timer = Timer()
    procs = []
    for p in range(processes):
        multi = {} if processes == 1 else dict(coordinator=f"127.0.0.1:{port}",
                                               num_processes=processes, process_id=p)
        config = json.dumps({**settings, "out": str(out), **multi})
        procs.append(subprocess.Popen([sys.executable, "-c", _RUN, config], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      text=True))
    errors = []
    for proc in procs:
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            _, err = proc.communicate()
        if proc.returncode != 0:
            errors.append(err[-2000:])
    wall = timer.elapsed()
    if errors:
        raise SystemExit("the audit failed:\n" + "\n----\n".join(errors))
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    timings = json.loads((out / "summary.json").read_text())["timings_s"]
    return {"processes": processes, "wall_s": wall,
            "cpu_s": (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
            **{f"{k}_s": v for k, v in timings.items() if isinstance(v, (int, float))}}


def _param_count(model: str, model_kwargs: dict, image_shape: tuple, num_classes: int) -> int:
    import jax
    import numpy as np

    from jaxcurv import models

    net = models.get_model(model, num_classes, **model_kwargs)
    shapes = jax.eval_shape(lambda k: models.init_variables(net, k, image_shape),
                            jax.random.PRNGKey(0))
    return int(sum(np.prod(a.shape) for a in jax.tree.leaves(shapes["params"])))


def gathered_bytes(*, members: int, examples: int, params: int, epochs: int,
                   zero_order_members: int, zero_order_itemsize: int = 8) -> dict[str, int]:
    """Bytes every process receives in a multi-process audit (see the module docstring)."""
    every = max(1, round(epochs / 12))  # the audit records and checkpoints ~12 times
    recorded = epochs // every + (epochs % every != 0)
    return {"parameters": 4 * params * members,
            "records": members * recorded * (5 * examples + 12),
            "curvature": 16 * members * examples,
            "zero_order": zero_order_itemsize * zero_order_members * examples,
            "checkpoints": 12 * params * members * recorded}


def _projection(one: dict, members: int, total_bytes: int, *,
                bandwidth: float = 1.25e9) -> list[dict]:
    """T(P) = T_split·⌈K/P⌉/K + T_rest + bytes/bandwidth for P = 1, 2, 4, 8 (10 Gb/s)."""
    split = sum(one.get(f"{s}_s", 0.0) for s in _SPLIT)
    rest = one["total_s"] - split
    rows = []
    for p in (1, 2, 4, 8):
        comm = 0.0 if p == 1 else total_bytes / bandwidth
        t = split * math.ceil(members / p) / members + rest + comm
        rows.append({"hosts": p, "split_s": split * math.ceil(members / p) / members,
                     "replicated_s": rest, "transfer_s": comm, "total_s": t,
                     "speedup": one["total_s"] / t})
    return rows


def main(config: DistributedBench) -> None:
    settings = _settings(config.quick, config.seed)
    repeats = config.repeats
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):  # interleaved: 1, 2, 1, 2, ...
            for processes in (1, 2):
                out = Path(tmp) / f"run{r}-{processes}"
                rows.append(_audit(settings, out, processes, timeout=config.timeout))
    B.print_table(f"audit {settings}", rows, ["processes", "wall_s", "cpu_s", "train_s",
                                              "curvature_s", "total_s"])
    median = {p: sorted(r["wall_s"] for r in rows if r["processes"] == p)[repeats // 2]
              for p in (1, 2)}
    ratio = median[2] / median[1]
    load = load_average()
    print(f"\nwall time 2 processes / 1 process: {ratio:.2f} (load average {load:.1f}, "
          f"{os.cpu_count()} CPUs)")

    from jaxcurv import data
    from jaxcurv.workflow import AuditConfig

    default = AuditConfig()
    train, _ = data.train_test(default.dataset)
    params = _param_count(default.model, default.model_settings, train.images.shape[1:],
                          train.num_classes)
    sizes = gathered_bytes(members=default.models, examples=len(train), params=params,
                           epochs=default.epochs, zero_order_members=default.zero_order_members)
    print(f"\ngathered per process, default audit (K={default.models}, N={len(train)}, "
          f"{default.model} {default.model_settings}, {params:,} parameters):")
    for name, b in sizes.items():
        print(f"  {name:12s} {b / 1e6:10.2f} MB")
    bench = gathered_bytes(members=settings["models"], examples=min(settings["max_examples"],
                                                                    len(train)),
                           params=params, epochs=settings["epochs"],
                           zero_order_members=(min(settings.get("zero_order_members", 8),
                                                   settings["models"])
                                               if settings["zero_order"] else 0))
    one = next(r for r in rows if r["processes"] == 1)
    projection = _projection(one, settings["models"], sum(bench.values()))
    B.print_table(f"projection from the one-process stage times (K={settings['models']}; "
                  "split = train + curvature + zero-order, 10 Gb/s)", projection)
    B.write_results(config, "distributed", {
        "settings": settings, "runs": rows, "ratio_2_over_1": ratio, "load_average": load,
        "gathered_bytes_default_audit": sizes, "gathered_bytes_benchmarked": bench,
        "default_params": params,
        "projection": projection})


if __name__ == "__main__":
    B.cli(DistributedBench, main, name="distributed", description=__doc__)
