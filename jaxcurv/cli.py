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
    """The ``jaxcurv`` parser, its flags generated from the workflow's config tree
    (:mod:`jaxcurv.workflow.settings`); builds without importing jax."""
    from jaxcurv.workflow.config import PRESETS, AuditConfig, CurvatureConfig, EpsilonConfig
    from jaxcurv.workflow.flags import HelpFormatter, add_flags

    parser = argparse.ArgumentParser(prog="jaxcurv", allow_abbrev=False, description=(
        "Input curvature, memorization, membership inference and differential privacy audits in "
        "JAX."))
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    audit = sub.add_parser("audit", help="run the whole audit on a dataset (the main job)",
                           description=_AUDIT_HELP, formatter_class=HelpFormatter,
                           allow_abbrev=False)
    add_flags(audit, AuditConfig, skip=("preset",))
    audit.add_argument("--preset", dest="preset", default=argparse.SUPPRESS,
                       choices=sorted(PRESETS) or None, metavar="NAME",
                       help="a named set of settings that explicit flags override" + "".join(
                           f"; {name}: {p['description']}" for name, p in sorted(PRESETS.items()))
                       + " (default: none)")
    curvature = sub.add_parser(
        "curvature", help="train one model and write per-example curvature",
        description="Train one model on a dataset, then write the input curvature tr(H²), tr(H) "
        "and their standard errors of every training example to a CSV.",
        formatter_class=HelpFormatter, allow_abbrev=False)
    add_flags(curvature, CurvatureConfig)
    epsilon = sub.add_parser(
        "epsilon", help="DP-SGD epsilon of (sigma, q, steps, delta), or sigma for a target epsilon",
        description="Privacy accounting of Poisson-subsampled Gaussian DP-SGD: prints epsilon, "
        "delta, the accountant, the best RDP order and any RDP order that could not be used, or "
        "calibrates the noise multiplier to a target epsilon. RDP uses dp_accounting and, at "
        "fractional orders, a numerical integral of the Renyi divergence (never looser than "
        "dp_accounting alone).", formatter_class=HelpFormatter, allow_abbrev=False)
    add_flags(epsilon, EpsilonConfig)
    return parser


def _config(config_type, args):
    """The command's config: command-line defaults, the preset, then the flags given."""
    from jaxcurv.workflow.config import with_preset
    from jaxcurv.workflow.flags import command_line_defaults, given_settings

    given = {**command_line_defaults(config_type), **given_settings(args, config_type)}
    if getattr(args, "preset", None) is not None:
        given["preset"] = args.preset
    config = with_preset(config_type, given)
    config.validate()
    return config


def _audit(args) -> int:
    from jaxcurv.workflow import AuditConfig, run_audit

    config = _config(AuditConfig, args)
    summary = run_audit(config)
    from jaxcurv import distributed

    if not distributed.is_writer():
        return 0
    if config.progress:
        _print_summary(summary, config.out)
    _print_warnings(summary["findings"]["warnings"])
    return 0


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


def _curvature(args) -> int:
    from jaxcurv.workflow import CurvatureConfig, run_curvature

    path = run_curvature(_config(CurvatureConfig, args))
    print(f"wrote {path}")
    return 0


def _epsilon(args) -> int:
    import json
    import math

    from jaxcurv.workflow.commands import format_privacy_accounting, privacy_accounting
    from jaxcurv.workflow.config import EpsilonConfig

    config = _config(EpsilonConfig, args)
    result = privacy_accounting(sampling_rate=config.sampling_rate, steps=config.steps,
                                delta=config.delta, noise_multiplier=config.noise_multiplier,
                                target_epsilon=config.target_epsilon,
                                accountant=config.accountant)
    if config.json:  # strict JSON: a non-finite epsilon (no usable order) is null
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
    from jaxcurv.errors import DataNotFound, JaxcurvError

    command = {"audit": _audit, "curvature": _curvature, "epsilon": _epsilon}[args.command]
    try:
        return command(args)
    except KeyboardInterrupt:
        resume = "; rerun the same command to resume" if args.command == "audit" else ""
        print(f"\njaxcurv {args.command}: interrupted{resume}", file=sys.stderr)
        return 130
    except DataNotFound as err:
        print("\n".join(err.lines(f"jaxcurv {args.command}: error: ")), file=sys.stderr)
        return err.exit_code
    except (JaxcurvError, ValueError) as err:  # bad input, divergence, a locked --out, I/O
        print(f"jaxcurv {args.command}: error: {err}", file=sys.stderr)
        return getattr(err, "exit_code", 2)


if __name__ == "__main__":
    sys.exit(main())
