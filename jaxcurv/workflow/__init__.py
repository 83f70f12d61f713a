"""The workflow layer: what combines the primitives into runs.

The primitives (curvature, data, models, optim, training, ensemble, privacy, memorization,
adversarial, mia) never import this package; the ``jaxcurv`` command, ``experiments/`` and
``bench/`` call it and re-implement none of it.

- ``config``: :class:`AuditConfig` and :func:`apply_overrides`, the one ``key=value`` parser.
- ``cache``: :class:`StageCache`, stage outputs keyed on content and verified on read.
- ``timing``: :class:`Timer` for named stages; ``time_call`` / ``time_interleaved`` for
  benchmarks.
- ``environment``: :func:`environment`, the versions/backend/devices echo of every result file.
- ``lock``: one run per output folder.
- ``attacks``: ``attack_scores`` (every MIA, leave-one-model-out), ``mia_by_memorization``,
  ``epsilon_audit``.
- ``proxy_scores``: ``proxies``, the memorization proxies of an ensemble.
- ``training``: :func:`train_ensemble`, ensemble training with checkpoints, progress bars,
  callbacks and multi-process jobs; ``members_across_processes``.
- ``audit``: :func:`run_audit` and its stages; ``sections``: the summary and report sections.
- ``commands``: ``run_curvature`` and ``privacy_accounting`` (``jaxcurv curvature`` / ``epsilon``).

The jax-free modules load with the package; the names backed by jax (attacks, audit, proxies)
load on first use, so ``jaxcurv --help`` answers without importing jax.
"""

from jaxcurv._lazy import lazy_names
from jaxcurv.workflow.cache import StageCache, ensemble_fingerprint, fingerprint
from jaxcurv.workflow.commands import privacy_accounting, run_curvature
from jaxcurv.workflow.config import (
    OPTIMIZERS,
    PRESETS,
    AuditConfig,
    CurvatureConfig,
    EpsilonConfig,
    with_preset,
)
from jaxcurv.workflow.settings import apply_overrides, parse_overrides
from jaxcurv.workflow.environment import describe_device, environment
from jaxcurv.workflow.timing import Timer, Timing, load_average, time_call, time_interleaved

__all__ = [
    "AuditConfig",
    "CurvatureConfig",
    "EpsilonConfig",
    "PRESETS",
    "with_preset",
    "OPTIMIZERS",
    "apply_overrides",
    "parse_overrides",
    "StageCache",
    "fingerprint",
    "ensemble_fingerprint",
    "Timer",
    "Timing",
    "time_call",
    "time_interleaved",
    "load_average",
    "environment",
    "describe_device",
    "MIA_ATTACKS",
    "attack_scores",
    "mia_by_memorization",
    "epsilon_audit",
    "proxies",
    "train_ensemble",
    "members_across_processes",
    "AuditData",
    "AuditRun",
    "run_audit",
    "run_curvature",
    "privacy_accounting",
]


__getattr__, __dir__ = lazy_names(__name__, {
    "MIA_ATTACKS": ".attacks", "attack_scores": ".attacks", "epsilon_audit": ".attacks",
    "mia_by_memorization": ".attacks", "AuditData": ".audit", "AuditRun": ".audit",
    "run_audit": ".audit", "proxies": ".proxy_scores", "train_ensemble": ".training",
    "members_across_processes": ".training",
    **{name: "" for name in ("attacks", "audit", "proxy_scores", "sections", "experiment",
                             "training")},
}, globals())
