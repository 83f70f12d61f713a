"""Compatibility module: the audit now lives in :mod:`jaxcurv.workflow`.

The names this module has always offered are re-exported from there (``AuditConfig`` and
``run_audit`` from ``workflow.config`` / ``workflow.audit``, the attacks from
``workflow.attacks``, ``in_out_means`` and ``member_mean`` from the shared host numerics). New code
imports from :mod:`jaxcurv.workflow`.
"""

from jaxcurv._numerics import in_out_means
from jaxcurv._numerics import masked_mean as member_mean
from jaxcurv.workflow.attacks import MIA_ATTACKS, attack_scores, epsilon_audit, mia_by_memorization
from jaxcurv.workflow.audit import run_audit
from jaxcurv.workflow.config import AuditConfig

__all__ = ["AuditConfig", "run_audit", "MIA_ATTACKS", "attack_scores", "mia_by_memorization",
           "in_out_means", "member_mean", "epsilon_audit"]
