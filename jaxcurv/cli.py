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


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's line breaks and ends a flag's help with "(default: X)" unless the
    help already states its default (flags whose default is None or off say it in words)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (not action.option_strings or "default" in text or default is None
                or default is False or default is argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    """The ``jaxcurv`` parser; builds without importing jax (the defaults come from the
    workflow's jax-free config modules)."""
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
                       description=_AUDIT_HELP, formatter_class=_HelpFormatter)
    a.add_argument("--dataset", default=d.dataset, help="digits (embedded) | cifar10 | "
                   "cifar100 | tfds:<name> | npz:<path>")
    a.add_argument("--data-dir", default=None, metavar="DIR", help="folder with dataset files "
                   "(CIFAR python files or archive, an npz, or a TFDS data_dir) (default: "
                   "$JAXCURV_DATA_DIR, then tensorflow-datasets' data dir)")
    a.add_argument("--max-examples", type=int, default=None, metavar="N",
                   help="use a random subset of N training (and at most N test) examples, e.g. "
                   "to try CIFAR on a CPU (default: all)")
    a.add_argument("--model", default=d.model, help="mlp | cnn | resnet18 | resnet18_gn | "
                   "fastnet (mlp: a GELU MLP, 2 hidden layers of 512, that fits every training "
                   "label of the digits)")
    a.add_argument("--model-kwargs", default=None, metavar="JSON",
                   help="keyword arguments of the model as a JSON object, e.g. "
                   "'{\"width\": 16, \"hidden\": 512}' for cnn (default: the model's defaults; "
                   "mlp: hidden 512, depth 2)")
    a.add_argument("--models", type=int, default=d.models, metavar="K",
                   help="ensemble members, each trained on a random --fraction of the data")
    a.add_argument("--fraction", type=float, default=d.fraction,
                   help="fraction of the training set each member sees")
    a.add_argument("--epochs", type=int, default=d.epochs, help="epochs per member")
    a.add_argument("--batch-size", type=int, default=d.batch_size,
                   help="(expected) batch size")
    a.add_argument("--learning-rate", type=float, default=None,
                   help="peak learning rate, cosine schedule (default: 2e-3 for adam, 0.05 for "
                   "sgd, sam and sam-gnr)")
    a.add_argument("--weight-decay", type=float, default=d.weight_decay,
                   help="L2 on kernels (0: members must fit their training labels for "
                   "memorization to show)")
    a.add_argument("--optimizer", default=d.optimizer, choices=list(OPTIMIZERS),
                   help="sgd (momentum 0.9), adam, sam (SGD + sharpness-aware minimization) "
                   "or sam-gnr (SAM + gradient-norm penalty + noise, the SAM paper's "
                   "mitigation)")
    a.add_argument("--gnr-penalty", type=float, default=None,
                   help="sam-gnr: weight of the parameter-gradient-norm penalty (default: the "
                   "optimizer's)")
    a.add_argument("--gnr-noise", type=float, default=None,
                   help="sam-gnr: standard deviation of the injected gradient noise (default: "
                   "the optimizer's)")
    a.add_argument("--rho", type=float, default=d.rho, help="SAM radius")
    a.add_argument("--num-probes", type=int, default=d.num_probes,
                   help="Hutchinson / zero-order probes per example")
    a.add_argument("--h", type=float, default=d.h, help="zero-order step size")
    a.add_argument("--no-zero-order", dest="zero_order", action="store_false",
                   help="skip the black-box (losses only) curvature attack (default: run it)")
    a.add_argument("--zero-order-members", type=int, default=d.zero_order_members, metavar="M",
                   help="black-box curvature on the first M members only (0 = all): its "
                   "float64 loss queries cost more than the white-box HVPs on a CPU")
    a.add_argument("--adversarial", action="store_true",
                   help="also compute the adversarial-distance proxy (smallest L2 PGD step that "
                   "flips the prediction; slower) (default: off)")
    a.add_argument("--label-noise", type=float, default=d.label_noise, metavar="F",
                   help="flip this fraction of training labels and report how well curvature "
                   "and memorization find them")
    a.add_argument("--dp-epsilon", type=float, default=None, metavar="E",
                   help="train with DP-SGD at this epsilon (noise calibrated; also trains a "
                   "non-private reference to measure the cost) (default: no DP)")
    a.add_argument("--dp-delta", type=float, default=d.dp_delta, help="DP delta")
    a.add_argument("--dp-clip", type=float, default=d.dp_clip,
                   help="per-example gradient clip norm C")
    a.add_argument("--augment", default=None, choices=["on", "off"],
                   help="random crop + flip while training (default: on for RGB images, off "
                   "for grayscale)")
    a.add_argument("--bootstrap", type=int, default=d.bootstrap,
                   help="bootstrap resamples for MIA confidence intervals")
    a.add_argument("--seed", type=int, default=d.seed, help="seed for subsets, keys, noise")
    a.add_argument("--out", default=d.out, help="output folder")
    a.add_argument("--clean", action="store_true",
                   help="remove checkpoint folders under OUT/checkpoints that other "
                   "configurations left (default: keep them)")
    a.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                   help="several hosts: process 0's address and a free port, the same on every "
                   "process (default: $JAX_COORDINATOR_ADDRESS, else the cluster's launcher "
                   "(SLURM, Open MPI, Cloud TPU), else one process)")
    a.add_argument("--num-processes", type=int, default=None, metavar="N",
                   help="several hosts: number of processes, one per host (default: "
                   "$JAX_NUM_PROCESSES or the cluster's launcher, else 1)")
    a.add_argument("--process-id", type=int, default=None, metavar="I",
                   help="several hosts: this process's index in [0, N); process 0 writes the "
                   "reports (default: $JAX_PROCESS_ID or the cluster's launcher)")
    a.add_argument("--quiet", action="store_true",
                   help="no progress bars or stage lines (default: shown)")


def _add_curvature(sub) -> None:
    from jaxcurv.workflow.commands import CURVATURE_METHODS, CurvatureConfig

    dc = CurvatureConfig()
    c = sub.add_parser("curvature", help="train one model and write per-example curvature",
                       description="Train one model on a dataset, then write the input curvature "
                       "tr(H), tr(H²) and their standard errors of every training example to a "
                       "CSV.", formatter_class=_HelpFormatter)
    c.add_argument("--dataset", default=dc.dataset, help="digits (embedded) | cifar10 | "
                   "cifar100 | tfds:<name> | npz:<path>")
    c.add_argument("--data-dir", default=None, metavar="DIR", help="folder with dataset files "
                   "(default: $JAXCURV_DATA_DIR, then tensorflow-datasets' data dir)")
    c.add_argument("--model", default=dc.model, help="mlp | cnn | resnet18 | resnet18_gn | "
                   "fastnet")
    c.add_argument("--epochs", type=int, default=dc.epochs, help="training epochs")
    c.add_argument("--batch-size", type=int, default=dc.batch_size, help="batch size")
    c.add_argument("--num-probes", type=int, default=dc.num_probes,
                   help="Hutchinson probes per example (method hutchinson)")
    c.add_argument("--method", default=dc.method, choices=list(CURVATURE_METHODS),
                   help="hutchinson (exact Hessian-vector products, random probes), exact (the "
                   "full input Hessian; small inputs only) or finite_difference (the papers' "
                   "estimator)")
    c.add_argument("--seed", type=int, default=dc.seed, help="seed for initialization and probes")
    c.add_argument("--out", default=dc.out, help="CSV file to write")
    c.add_argument("--quiet", action="store_true", help="no progress bars (default: shown)")


def _add_epsilon(sub) -> None:
    e = sub.add_parser(
        "epsilon", help="DP-SGD epsilon of (sigma, q, steps, delta), or sigma for a target epsilon",
        description="Privacy accounting of Poisson-subsampled Gaussian DP-SGD: prints epsilon, "
        "delta, the accountant, the best RDP order and any RDP order that could not be used, or "
        "calibrates the noise multiplier to a target epsilon. RDP uses dp_accounting and, at "
        "fractional orders, a numerical integral of the Renyi divergence (never looser than "
        "dp_accounting alone).")
    e.add_argument("--noise-multiplier", type=float, default=None, metavar="SIGMA",
                   help="noise std / clip norm (default: none; give this or --target-epsilon)")
    e.add_argument("--target-epsilon", type=float, default=None, metavar="EPS",
                   help="calibrate sigma to spend this epsilon instead (default: none)")
    e.add_argument("--sampling-rate", type=float, required=True, metavar="Q",
                   help="Poisson sampling rate q = expected batch size / N (required)")
    e.add_argument("--steps", type=int, required=True,
                   help="number of DP-SGD steps (required)")
    e.add_argument("--delta", type=float, default=1e-5, help="delta (default 1e-5)")
    e.add_argument("--accountant", default="rdp", choices=["rdp", "pld", "rdp_classic"],
                   help="rdp: Renyi DP, improved conversion; pld: privacy loss distributions "
                   "(tightest, slower); rdp_classic: TF-Privacy's original orders and conversion "
                   "(default rdp)")
    e.add_argument("--json", action="store_true",
                   help="print the result as JSON instead of text (default: text)")


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
        bootstrap=args.bootstrap, clean=args.clean, seed=args.seed, out=args.out,
        coordinator=args.coordinator, num_processes=args.num_processes,
        process_id=args.process_id, progress=not args.quiet)
    summary = run_audit(config)
    from jaxcurv import distributed

    if not distributed.is_writer():
        return 0
    if not args.quiet:
        _print_summary(summary, args.out)
    _print_warnings(summary["findings"]["warnings"])
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
    from jaxcurv.workflow.sections import findings_lines, tpr_text

    acc = summary["accuracy"]
    corr = summary["correlations"]
    print(f"\njaxcurv audit: {summary['data']['dataset']}, {summary['config']['model']}, "
          f"{summary['config']['models']} members")
    for line in findings_lines(summary["findings"]):
        print(f"  {line}")
    print(f"  test accuracy        {acc['test_mean']:.3f} (min {acc['test_min']:.3f}, "
          f"chance {acc['chance']:.3f})")
    print(f"  train accuracy (IN)  {acc['train_in_mean']:.3f} (OUT {acc['train_out_mean']:.3f})")
    print(f"  Spearman(mem, curvature tr H²)  {corr['spearman_mem_curvature']:.3f}")
    print("  membership inference (AUROC, TPR at 1 % FPR; higher score = more likely member)"
          + (", non-private reference's AUROC:" if "privacy" in summary else ":"))
    reference = {r["attack"]: r["auroc"] for r in summary.get("privacy", {}).get(
        "nonprivate_mia", [])}
    for row in summary["mia"]["metrics"]:
        ref = reference.get(row["attack"])
        tpr = tpr_text(row["tpr_at_fpr_1pct"], note=row.get("tpr_at_fpr_1pct_note"))
        print(f"    {row['attack']:<16} {row['auroc']:.3f}  {tpr:>8}"
              + ("" if "privacy" not in summary else
                 "   —" if ref is None else f"  {ref:.3f}"))
    if "privacy" in summary:
        p = summary["privacy"]
        print(f"  epsilon accounted {p['epsilon_accounted']:.3f}, audited lower bound "
              f"{p['epsilon_audited_lower_bound']:.3f} (what one attack certifies; 0 = nothing "
              "certified, consistent with the accounted ε)")
    if "label_noise" in summary:
        noise = summary["label_noise"]
        fitted = noise["flipped_train_in_accuracy"]
        print(f"  flipped labels: {noise['flipped']}, fitted by the members trained on them: "
              + ("—" if fitted is None else f"{fitted:.3f}"))
        print("  finding them (AUROC): " + ", ".join(f"{name} {v['auroc']:.3f}"
                                                     for name, v in noise["ranking"].items()))
    print(f"  total {summary['timings_s']['total']:.1f} s; report: "
          f"{os.path.join(out, 'report.html')}")


def _print_warnings(warnings: Sequence[str]) -> None:
    """Each sanity warning on stderr, in red on a terminal."""
    red, reset = ("\033[31m", "\033[0m") if sys.stderr.isatty() else ("", "")
    for warning in warnings:
        print(f"{red}warning: {warning}{reset}", file=sys.stderr)


def _data_error(command: str, err: FileNotFoundError) -> str:
    """A missing-data message that leads with the command-line fix, then what was looked for
    and the other ways to get the data."""
    first, *rest = str(err).splitlines() or [""]
    head, _, looked = first.partition(" Looked for: ")
    cli = [line for line in rest if line.startswith("From the command line")]
    if not cli:
        cli = [("From the command line: --dataset npz:PATH with PATH an existing .npz file."
                if "npz" in head else "From the command line: pass --data-dir DIR or set "
                "JAXCURV_DATA_DIR=DIR, where DIR holds the dataset's files.")]
    others = [line for line in rest if line not in cli]
    return "\n".join([f"jaxcurv {command}: error: {head}", *cli,
                      *([f"Looked for: {looked}"] if looked else []), *others])


def _curvature(args) -> int:
    from jaxcurv.workflow import CurvatureConfig, run_curvature

    path = run_curvature(CurvatureConfig(
        dataset=args.dataset, data_dir=args.data_dir, model=args.model, epochs=args.epochs,
        batch_size=args.batch_size, num_probes=args.num_probes, method=args.method,
        seed=args.seed, out=args.out, progress=not args.quiet))
    print(f"wrote {path}")
    return 0


def _epsilon(args) -> int:
    import json
    import math

    from jaxcurv.workflow.commands import format_privacy_accounting, privacy_accounting

    result = privacy_accounting(sampling_rate=args.sampling_rate, steps=args.steps,
                                delta=args.delta, noise_multiplier=args.noise_multiplier,
                                target_epsilon=args.target_epsilon, accountant=args.accountant)
    if args.json:  # strict JSON: a non-finite epsilon (no usable order) is null
        safe = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in result.items()}
        print(json.dumps(safe, indent=2))
    else:
        print(format_privacy_accounting(result))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``jaxcurv`` command; returns its exit status (2: bad input or missing data,
    130: interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from jaxcurv.errors import JaxcurvError

    command = {"audit": _audit, "curvature": _curvature, "epsilon": _epsilon}[args.command]
    try:
        return command(args)
    except KeyboardInterrupt:
        resume = "; rerun the same command to resume" if args.command == "audit" else ""
        print(f"\njaxcurv {args.command}: interrupted{resume}", file=sys.stderr)
        return 130
    except FileNotFoundError as err:
        print(_data_error(args.command, err), file=sys.stderr)
        return 2
    except (JaxcurvError, ValueError) as err:  # bad input, divergence, a locked --out, I/O
        print(f"jaxcurv {args.command}: error: {err}", file=sys.stderr)
        return getattr(err, "exit_code", 2)


if __name__ == "__main__":
    sys.exit(main())
