"""Benchmark: end-to-end attack time on given statistics, and zero-order query counts.

Score computation only (no model): N targets × K shadow models × A augmentations of random
statistics with a balanced in/out split (jaxcurv.data.subset_masks, each example IN for half the
shadows) and a shift for members, as a real attack would see:

- LiRA online / offline (logit-confidence-like Gaussian statistics, (N, A) and (K, N, A));
- curvature LR and NLL (log-normal positive curvature, members lower), corrected and
  paper-compatible modes;
- RMIA online (probabilities in (0, 1); Z population samples with K reference models);
- Attack-R (loss quantile, interpolated) and calibrated loss (losses, one augmentation);
- roc_metrics on the LiRA scores (without and with a bootstrap).

Each time is the median of repeats after a warm-up call (numpy/scipy on the host: nothing to
compile). Also the model queries per example of the zero-order curvature signal
(jaxcurv.curvature.zero_order_queries) for the Curvature Clues protocol (10 probes, 2
augmentations), and, with ``--zero-order-timing``, zero_order_curvature's throughput on the
digits CNN.

    python -m bench.mia --quick      # 5,000 targets × 16 shadows × 2 augmentations
    python -m bench.mia              # 50,000 × 64 × 2 (CIFAR-10's size; fine on a CPU)
"""

from __future__ import annotations

import dataclasses
import sys
import warnings
from pathlib import Path

if not __package__:  # python bench/mia.py from a checkout: the repository root on the path
    sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from jaxcurv import mia  # noqa: E402
from jaxcurv.curvature import zero_order_queries  # noqa: E402
from jaxcurv.data import subset_masks  # noqa: E402
from jaxcurv.workflow import Timer, describe_device, time_call  # noqa: E402
from jaxcurv.workflow import benchmark as B  # noqa: E402
from jaxcurv.workflow.settings import CurvatureProbes, redefault, setting  # noqa: E402


@dataclasses.dataclass(frozen=True)
class MIABench(B.Repeats, B.BenchConfig):
    """Settings of ``python -m bench.mia``."""

    repeats: int | None = B.remode(B.Repeats, "repeats", 3, 3)
    targets: int | None = B.per_mode(50_000, 5_000, "target examples N", metavar="N", low=2,
                                     high=10_000_000)
    shadows: int | None = B.per_mode(64, 16, "shadow (reference) models K", metavar="K", low=2,
                                     high=100_000)
    augmentations: int = setting(2, "augmented views per example A", metavar="A", low=1,
                                 high=1_000)
    population: int | None = B.per_mode(10_000, 1_000, "RMIA population Z (10,000 = a CIFAR "
                                        "test split)", metavar="Z", low=1, high=10_000_000)
    bootstrap: int | None = B.per_mode(200, 50, "bootstrap resamples of roc_metrics", low=0,
                                       high=100_000)
    num_probes: int = redefault(CurvatureProbes, "num_probes", 10)
    zero_order_timing: bool = setting(False, "also time zero_order_curvature on the digits CNN")


def make_statistics(n: int, k: int, a: int, z: int, seed: int,
                    in_all: np.ndarray | None = None) -> dict:
    """Synthetic shadow statistics with a member effect (float64 host arrays). ``in_all`` (K+1, N)
    bool: who holds each example, row 0 the target model (default: balanced random halves)."""
    rng = np.random.default_rng(seed)
    if in_all is None:
        in_all = subset_masks(n, k + 1, fraction=0.5, seed=seed)  # row 0 is the target model
    target_in, shadow_in = in_all[0], in_all[1:]
    difficulty = rng.normal(0.0, 2.0, (n, 1))

    def stat(member, scale=1.0):
        return difficulty + 1.5 * member[..., None] + rng.normal(0.0, scale, (*member.shape, a))

    conf_t, conf_s = stat(target_in), stat(shadow_in)
    # curvature: log-normal, members lower
    curv_t = np.exp(0.5 * difficulty - 0.8 * target_in[:, None] + rng.normal(0, 0.5, (n, a)))
    curv_s = np.exp(0.5 * difficulty - 0.8 * shadow_in[..., None] + rng.normal(0, 0.5, (k, n, a)))
    # losses ≥ 0, members lower
    loss_t = np.log1p(np.exp(-conf_t[:, 0]))
    loss_s = np.log1p(np.exp(-conf_s[..., 0]))
    # RMIA probabilities p(y|x) = sigmoid(confidence); population (Z) never IN
    sig = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    pop_diff = rng.normal(0.0, 2.0, (z, 1))
    pop_t = sig(pop_diff + rng.normal(0, 1, (z, a)))
    pop_s = sig(pop_diff[None] + rng.normal(0, 1, (k, z, a)))
    return {"target_in": target_in, "shadow_in": shadow_in, "conf_t": conf_t, "conf_s": conf_s,
            "curv_t": curv_t, "curv_s": curv_s, "loss_t": loss_t, "loss_s": loss_s,
            "prob_t": sig(conf_t), "prob_s": sig(conf_s), "pop_t": pop_t, "pop_s": pop_s}


def attacks(s: dict, bootstrap: int) -> dict:
    """name -> zero-argument callable computing that attack's scores."""
    lira_scores = {}

    def lira_online():
        lira_scores["online"] = mia.lira(s["conf_t"], s["conf_s"], s["shadow_in"], online=True)
        return lira_scores["online"]

    fns = {
        "lira online": lira_online,
        "lira offline": lambda: mia.lira(s["conf_t"], s["conf_s"], s["shadow_in"], online=False),
        "lira online, fixed variance": lambda: mia.lira(s["conf_t"], s["conf_s"], s["shadow_in"],
                                                        online=True, fixed_variance=True),
        "curvature_lr": lambda: mia.curvature_lr(s["curv_t"], s["curv_s"], s["shadow_in"]),
        "curvature_lr paper_compatible": lambda: mia.curvature_lr(
            s["curv_t"], s["curv_s"], s["shadow_in"], paper_compatible=True),
        "curvature_nll": lambda: mia.curvature_nll(s["curv_t"], s["curv_s"], s["shadow_in"]),
        "curvature_nll paper_compatible": lambda: mia.curvature_nll(
            s["curv_t"], s["curv_s"], s["shadow_in"], paper_compatible=True),
        "rmia online": lambda: mia.rmia(s["prob_t"], s["prob_s"], s["pop_t"], s["pop_s"],
                                        reference_in=s["shadow_in"]),
        "attack_r": lambda: mia.attack_r(s["loss_t"], s["loss_s"], s["shadow_in"]),
        "calibrated_loss": lambda: mia.calibrated_loss(s["loss_t"], s["loss_s"], s["shadow_in"]),
        "roc_metrics": lambda: mia.roc_metrics(lira_scores.get("online", s["conf_t"][:, 0]),
                                               s["target_in"]),
    }
    if bootstrap:
        fns[f"roc_metrics, bootstrap={bootstrap}"] = lambda: mia.roc_metrics(
            lira_scores.get("online", s["conf_t"][:, 0]), s["target_in"], bootstrap=bootstrap)
    return fns


def zero_order_rows(num_probes: int, augmentations: int) -> list[dict]:
    rows = []
    for method in ("mixed", "central"):
        q = zero_order_queries(num_probes, method)
        rows.append({"method": method, "probes": num_probes, "queries_per_aug": q,
                     "augmentations": augmentations, "queries_per_example": q * augmentations})
    return rows


def zero_order_timing(num_probes: int, repeats: int, *, seed: int = 0) -> list[dict]:
    """zero_order_curvature on the digits CNN (untrained), float32: examples/s and queries/s
    (the estimator held by make_zero_order_curvature: compiled once, then timed)."""
    import jax

    from jaxcurv import data, models
    from jaxcurv.curvature import make_zero_order_curvature

    ds = data.load("digits", split="train")
    model = models.get_model("cnn", ds.num_classes)
    key = jax.random.PRNGKey(seed)
    variables = models.init_variables(model, jax.random.fold_in(key, 0), ds.image_shape)
    loss_fn = models.make_loss_fn(model)
    rows = []
    for method in ("mixed", "central"):
        estimate = make_zero_order_curvature(loss_fn, num_probes=num_probes, method=method)
        t = time_call(lambda: estimate(variables, ds.images, ds.labels,
                                       jax.random.fold_in(key, 1)), repeats=repeats)
        n = len(ds)
        rows.append({"method": method, "examples": n, "examples_per_s": n / t.median,
                     "queries_per_s": n * zero_order_queries(num_probes, method) / t.median,
                     "median_s": t.median, "compile+first_s": t.first, "load": t.load})
    return rows


def main(config: MIABench) -> None:
    timer = Timer()
    with timer("statistics"):
        s = make_statistics(config.targets, config.shadows, config.augmentations,
                            config.population, config.seed)
    gen_s = timer.seconds["statistics"]
    print(f"{config.targets:,} targets × {config.shadows} shadows × {config.augmentations} "
          f"augmentations (RMIA population {config.population:,}); statistics generated in "
          f"{gen_s:.1f} s; {describe_device()}")
    rows, total = [], 0.0
    for name, fn in attacks(s, config.bootstrap).items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t = time_call(fn, repeats=config.repeats)
            scores = fn()
        row = {"attack": name, "median_s": t.median, "min_s": t.minimum,
               "targets_per_s": config.targets / t.median, "load": t.load}
        if isinstance(scores, np.ndarray) and scores.shape == (config.targets,):
            row["auroc"] = float(mia.roc_metrics(scores, s["target_in"])["auroc"])
        elif isinstance(scores, dict):
            row["auroc"] = scores["auroc"]
        rows.append(row)
        total += t.median
        print(row, flush=True)
    B.print_table(f"attack score time, {config.targets:,} targets × {config.shadows} shadows × "
                  f"{config.augmentations} augmentations — {describe_device()}", rows,
                  ["attack", "median_s", "min_s", "targets_per_s", "auroc", "load"])
    print(f"all attacks above, one after another: {total:.2f} s")
    zo = zero_order_rows(config.num_probes, config.augmentations)
    B.print_table("zero-order curvature signal: model queries per example (Curvature Clues "
                  f"protocol: {config.num_probes} probes × {config.augmentations} "
                  "augmentations)", zo)
    result = {"rows": rows, "total_s": total, "zero_order_queries": zo}
    if config.zero_order_timing:
        result["zero_order_timing"] = zero_order_timing(config.num_probes, config.repeats,
                                                        seed=config.seed)
        B.print_table("zero_order_curvature throughput (digits CNN, float32)",
                      result["zero_order_timing"])
    result["wall_s"] = timer.elapsed()
    B.write_results(config, "mia", result)


if __name__ == "__main__":
    B.cli(MIABench, main, name="mia", description=__doc__)
