"""The ``jaxcurv`` command: ``audit`` (the main job), ``curvature`` and ``epsilon``.

Parses flags into the workflow's configs and calls :mod:`jaxcurv.workflow`; progress output is on
unless ``--quiet``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

__all__ = ["main", "build_parser"]

_AUDIT_HELP = """\
Train an ensemble of models on random halves of a dataset and report, for every training example,
its input-loss curvature, its Feldman-Zhang memorization score, and how exposed it is to
membership inference (white-box and black-box curvature attacks, LiRA, RMIA, baselines).
With no arguments it runs on scikit-learn's embedded 8x8 digits in a few minutes on a CPU.
Outputs (in --out): scores.csv, summary.json, figures/*.png, report.html. A killed run started
again with the same arguments resumes from its checkpoints and cached stages.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxcurv", description="Input curvature, memorization, "
                                     "membership inference and differential privacy audits in JAX.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_audit(sub)
    _add_curvature(sub)
    _add_epsilon(sub)
    return parser


def _add_audit(sub) -> None:
    from jaxcurv.workflow.config import OPTIMIZERS, AuditConfig

    d = AuditConfig()
    a = sub.add_parser("audit", help="run the whole audit on a dataset (the main job)",
                       description=_AUDIT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    a.add_argument("--dataset", default=d.dataset, help="digits (embedded, default) | cifar10 | "
                   "cifar100 | tfds:<name> | npz:<path>")
    a.add_argument("--data-dir", default=None, help="folder with dataset files (CIFAR python "
                   "files or archive, an npz, or a TFDS data_dir); else $JAXCURV_DATA_DIR")
    a.add_argument("--max-examples", type=int, default=None, metavar="N",
                   help="use a random subset of N training (and at most N test) examples, e.g. "
                   "to try CIFAR on a CPU")
    a.add_argument("--model", default=d.model, help=f"mlp | cnn | resnet18 | resnet18_gn | "
                   f"fastnet (default {d.model}: a GELU MLP, 2 hidden layers of 512, that fits "
                   "every training label of the digits)")
    a.add_argument("--model-kwargs", default=None, metavar="JSON",
                   help="keyword arguments of the model as a JSON object, e.g. "
                   "'{\"width\": 16, \"hidden\": 512}' for cnn (default: the model's defaults; "
                   "mlp: hidden 512, depth 2)")
    a.add_argument("--models", type=int, default=d.models, metavar="K",
                   help=f"ensemble members, each trained on a random half (default {d.models})")
    a.add_argument("--fraction", type=float, default=d.fraction,
                   help="fraction of the training set each member sees (default 0.5)")
    a.add_argument("--epochs", type=int, default=d.epochs, help=f"epochs per member (default {d.epochs})")
    a.add_argument("--batch-size", type=int, default=d.batch_size,
                   help=f"(expected) batch size (default {d.batch_size})")
    a.add_argument("--learning-rate", type=float, default=None,
                   help="peak learning rate, cosine schedule (default: 2e-3 for adam, 0.05 for "
                   "sgd, sam and sam-gnr)")
    a.add_argument("--weight-decay", type=float, default=d.weight_decay,
                   help="L2 on kernels (default 0: members must fit their training labels for "
                   "memorization to show)")
    a.add_argument("--optimizer", default=d.optimizer, choices=list(OPTIMIZERS),
                   help=f"sgd (momentum 0.9), adam, sam (SGD + sharpness-aware minimization) "
                   f"or sam-gnr (SAM + gradient-norm penalty + noise, the SAM paper's "
                   f"mitigation) (default {d.optimizer})")
    a.add_argument("--gnr-penalty", type=float, default=None,
                   help="sam-gnr: weight of the parameter-gradient-norm penalty (default: the "
                   "optimizer's)")
    a.add_argument("--gnr-noise", type=float, default=None,
                   help="sam-gnr: standard deviation of the injected gradient noise (default: "
                   "the optimizer's)")
    a.add_argument("--rho", type=float, default=d.rho, help="SAM radius (default 0.05)")
    a.add_argument("--num-probes", type=int, default=d.num_probes,
                   help="Hutchinson / zero-order probes per example (default 10)")
    a.add_argument("--h", type=float, default=d.h, help="zero-order step size (default 1e-3)")
    a.add_argument("--no-zero-order", dest="zero_order", action="store_false",
                   help="skip the black-box (losses only) curvature attack")
    a.add_argument("--zero-order-members", type=int, default=d.zero_order_members, metavar="M",
                   help=f"black-box curvature on the first M members only (default "
                   f"{d.zero_order_members}; 0 = all): its float64 loss queries cost more than "
                   "the white-box HVPs on a CPU")
    a.add_argument("--adversarial", action="store_true",
                   help="also compute the adversarial-distance proxy (smallest L2 PGD step that "
                   "flips the prediction; slower)")
    a.add_argument("--label-noise", type=float, default=d.label_noise, metavar="F",
                   help="flip this fraction of training labels and report how well curvature "
                   "and memorization find them (default 0)")
    a.add_argument("--dp-epsilon", type=float, default=None, metavar="E",
                   help="train with DP-SGD at this epsilon (noise calibrated; also trains a "
                   "non-private reference to measure the cost)")
    a.add_argument("--dp-delta", type=float, default=d.dp_delta, help="DP delta (default 1e-5)")
    a.add_argument("--dp-clip", type=float, default=d.dp_clip,
                   help="per-example gradient clip norm C (default 1.0)")
    a.add_argument("--augment", default=None, choices=["on", "off"],
                   help="random crop + flip while training (default: on for RGB images)")
    a.add_argument("--bootstrap", type=int, default=d.bootstrap,
                   help="bootstrap resamples for MIA confidence intervals (default 100)")
    a.add_argument("--seed", type=int, default=d.seed, help="seed for subsets, keys, noise")
    a.add_argument("--out", default=d.out, help=f"output folder (default {d.out})")
    a.add_argument("--quiet", action="store_true", help="no progress output")


def _add_curvature(sub) -> None:
    from jaxcurv.workflow.commands import CURVATURE_METHODS, CurvatureConfig

    dc = CurvatureConfig()
    c = sub.add_parser("curvature", help="train one model and write per-example curvature",
                       description="Train one model on a dataset, then write the input curvature "
                       "tr(H), tr(H²) and their standard errors of every training example to a CSV.")
    c.add_argument("--dataset", default=dc.dataset)
    c.add_argument("--data-dir", default=None, help="folder with dataset files; else "
                   "$JAXCURV_DATA_DIR")
    c.add_argument("--model", default=dc.model)
    c.add_argument("--epochs", type=int, default=dc.epochs)
    c.add_argument("--batch-size", type=int, default=dc.batch_size)
    c.add_argument("--num-probes", type=int, default=dc.num_probes)
    c.add_argument("--method", default=dc.method, choices=list(CURVATURE_METHODS))
    c.add_argument("--seed", type=int, default=dc.seed)
    c.add_argument("--out", default=dc.out)
    c.add_argument("--quiet", action="store_true", help="no progress output")


def _add_epsilon(sub) -> None:
    e = sub.add_parser("epsilon", help="DP-SGD epsilon of (sigma, q, steps, delta)",
                       description="Privacy accounting of Poisson-subsampled Gaussian DP-SGD with "
                       "dp_accounting: prints epsilon, or the noise multiplier for a target epsilon.")
    e.add_argument("--noise-multiplier", type=float, help="sigma")
    e.add_argument("--target-epsilon", type=float, help="calibrate sigma to this epsilon instead")
    e.add_argument("--sampling-rate", type=float, required=True, help="q = batch size / N")
    e.add_argument("--steps", type=int, required=True)
    e.add_argument("--delta", type=float, default=1e-5)
    e.add_argument("--accountant", default="rdp", choices=["rdp", "pld", "rdp_classic"])


def _audit(args) -> int:
    from jaxcurv.workflow import AuditConfig, run_audit

    config = AuditConfig(
        dataset=args.dataset, data_dir=args.data_dir, max_examples=args.max_examples,
        model=args.model, model_kwargs=_json_object("--model-kwargs", args.model_kwargs),
        models=args.models, fraction=args.fraction, epochs=args.epochs,
        batch_size=args.batch_size, learning_rate=args.learning_rate,
        weight_decay=args.weight_decay, optimizer=args.optimizer, rho=args.rho,
        gnr_penalty=args.gnr_penalty, gnr_noise=args.gnr_noise,
        num_probes=args.num_probes, h=args.h, zero_order=args.zero_order,
        zero_order_members=args.zero_order_members or None,
        adversarial=args.adversarial,
        label_noise=args.label_noise, dp_epsilon=args.dp_epsilon, dp_delta=args.dp_delta,
        dp_clip=args.dp_clip, augment=None if args.augment is None else args.augment == "on",
        bootstrap=args.bootstrap, seed=args.seed, out=args.out, progress=not args.quiet)
    summary = run_audit(config)
    if not args.quiet:
        _print_summary(summary, args.out)
    return 0


def _json_object(flag: str, text: str | None) -> dict | None:
    """A JSON object given on the command line, or None."""
    import json

    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{flag} takes a JSON object such as '{{\"hidden\": 256}}': {err}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{flag} takes a JSON object such as '{{\"hidden\": 256}}', got {text!r}")
    return value


def _print_summary(summary: dict, out: str) -> None:
    acc = summary["accuracy"]
    corr = summary["correlations"]
    print(f"\njaxcurv audit: {summary['data']['dataset']}, {summary['config']['model']}, "
          f"{summary['config']['models']} members")
    print(f"  test accuracy        {acc['test_mean']:.3f} (min {acc['test_min']:.3f})")
    print(f"  train accuracy (in)  {acc['train_in_mean']:.3f} (out {acc['train_out_mean']:.3f})")
    print(f"  Spearman(mem, curvature tr H²)  {corr['spearman_mem_curvature']:.3f}")
    print("  membership inference (AUROC, TPR@1%FPR):")
    for row in summary["mia"]["metrics"]:
        print(f"    {row['attack']:<16} {row['auroc']:.3f}  {row['tpr_at_fpr_1pct']:.3f}")
    if "privacy" in summary:
        p = summary["privacy"]
        print(f"  epsilon accounted {p['epsilon_accounted']:.3f}, audited lower bound "
              f"{p['epsilon_audited_lower_bound']:.3f}, accuracy cost {p['accuracy_cost']:.3f}")
    if "label_noise" in summary:
        noise = summary["label_noise"]
        r = noise["ranking"]
        print(f"  flipped labels: {noise['flipped']}, fitted by the members trained on them: "
              f"{noise['flipped_train_in_accuracy']:.3f}")
        print("  finding them (AUROC): " + ", ".join(f"{name} {v['auroc']:.3f}"
                                                     for name, v in r.items()))
    print(f"  total {summary['timings_s']['total']:.1f} s; report: "
          f"{os.path.join(out, 'report.html')}")


def _curvature(args) -> int:
    from jaxcurv.workflow import CurvatureConfig, run_curvature

    path = run_curvature(CurvatureConfig(
        dataset=args.dataset, data_dir=args.data_dir, model=args.model, epochs=args.epochs,
        batch_size=args.batch_size, num_probes=args.num_probes, method=args.method,
        seed=args.seed, out=args.out, progress=not args.quiet))
    print(f"wrote {path}")
    return 0


def _epsilon(args) -> int:
    from jaxcurv.workflow import privacy_accounting

    result = privacy_accounting(sampling_rate=args.sampling_rate, steps=args.steps,
                                delta=args.delta, noise_multiplier=args.noise_multiplier,
                                target_epsilon=args.target_epsilon, accountant=args.accountant)
    for name, value in result.items():
        print(f"{name} {value:.6g}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = {"audit": _audit, "curvature": _curvature, "epsilon": _epsilon}[args.command]
    try:
        return command(args)
    except (ValueError, FileNotFoundError) as err:
        hint = ("\n(on the command line, DIR is --data-dir DIR)"
                if isinstance(err, FileNotFoundError) and "data_dir" in str(err) else "")
        print(f"jaxcurv {args.command}: error: {err}{hint}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
