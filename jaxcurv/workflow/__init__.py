"""The workflow layer: what combines the primitives into runs.

The primitives (curvature, data, models, optim, training, ensemble, privacy, memorization,
adversarial, mia) never import this package; the ``jaxcurv`` command, ``experiments/`` and
``bench/`` call it and re-implement none of it.

- ``config``: :class:`AuditConfig` and :func:`apply_overrides`, the one ``key=value`` parser.
- ``cache``: :class:`StageCache`, stage outputs keyed on content and verified on read.
- ``timing``: :class:`Timer` for named stages; ``time_call`` / ``time_interleaved`` for
  benchmarks.
- ``environment``: :func:`environment`, the versions/backend/devices echo of every result file.
- ``attacks``: ``attack_scores`` (every MIA, leave-one-model-out), ``mia_by_memorization``,
  ``epsilon_audit``.
- ``proxies``: memorization proxies of an ensemble.
- ``audit``: :func:`run_audit` and its stages; ``sections``: the summary and report sections.
- ``commands``: ``run_curvature`` and ``privacy_accounting`` (``jaxcurv curvature`` / ``epsilon``).
"""

from jaxcurv.workflow.attacks import MIA_ATTACKS, attack_scores, epsilon_audit, mia_by_memorization
from jaxcurv.workflow.audit import AuditData, AuditRun, run_audit
from jaxcurv.workflow.cache import StageCache, ensemble_fingerprint, fingerprint
from jaxcurv.workflow.commands import CurvatureConfig, privacy_accounting, run_curvature
from jaxcurv.workflow.config import OPTIMIZERS, AuditConfig, apply_overrides, parse_overrides
from jaxcurv.workflow.environment import describe_device, environment
from jaxcurv.workflow.proxies import proxies
from jaxcurv.workflow.timing import Timer, Timing, load_average, time_call, time_interleaved

__all__ = [
    "AuditConfig",
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
    "AuditData",
    "AuditRun",
    "run_audit",
    "CurvatureConfig",
    "run_curvature",
    "privacy_accounting",
]
