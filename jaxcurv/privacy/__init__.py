"""Differential privacy: the plan of a private run, DP-SGD, accounting, the papers' bounds, audits.

Modules: ``plan`` (DPConfig/DPPlan, padded batch size, Poisson batches, ``PoissonSampler``; host
side), ``dpsgd`` (per-example clipping and noise, ``dp_value_and_grad``; device side),
``accounting`` (ε and σ on dp_accounting, tight at fractional RDP orders, ``Accountant``), ``rdp`` (numerically integrated RDP of the subsampled Gaussian),
``theory`` (bounds and fits), ``audit`` (empirical ε lower bounds). The names below load their
module on first use, so ``import jaxcurv.privacy.dpsgd`` or ``jaxcurv.privacy.plan`` does not
import dp_accounting.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from jaxcurv._lazy import lazy_names

_EXPORTS = {
    "accounting": (
        "TF_PRIVACY_LEGACY_ORDERS",
        "Accountant",
        "EpsilonReport",
        "calibrate_noise_multiplier",
        "dpsgd_event",
        "epsilon",
        "epsilon_report",
        "steps_for",
    ),
    "rdp": (
        "poisson_gaussian_log_a",
        "poisson_gaussian_rdp",
    ),
    "plan": (
        "ACCOUNTANTS",
        "DPConfig",
        "DPPlan",
        "PoissonSampler",
        "ensemble_poisson_batches",
        "max_batch_size",
        "poisson_batches",
        "poisson_plan",
    ),
    "dpsgd": (
        "PrivateGradientInfo",
        "clip_per_example",
        "dense_dp_gradient",
        "dense_norms_apply",
        "dp_gradient",
        "dp_value_and_grad",
        "per_example_gradients",
        "private_gradient",
    ),
    "theory": (
        "CurvaturePrivacyFit",
        "LossBoundFit",
        "MemorizationCurvatureFit",
        "curvature_bound",
        "curvature_bound_model",
        "fit_curvature_privacy",
        "fit_loss_bound",
        "fit_memorization_curvature",
        "loss_bound_model",
        "memorization_bound",
        "stability_bound",
    ),
    "audit": (
        "OneRunAudit",
        "canary_inclusion",
        "epsilon_lower_bound",
        "one_run_audit_scan",
        "one_run_epsilon_from_counts",
        "one_run_epsilon_lower_bound",
        "one_run_max_epsilon",
        "one_run_p_value",
    ),
}
_MODULE_OF = {name: f".{module}" for module, names in _EXPORTS.items() for name in names}

__all__ = [name for names in _EXPORTS.values() for name in names]

if TYPE_CHECKING:  # static analysers see the eager imports; at run time they load lazily
    from jaxcurv.privacy.accounting import (  # noqa: F401
        TF_PRIVACY_LEGACY_ORDERS,
        Accountant,
        EpsilonReport,
        calibrate_noise_multiplier,
        dpsgd_event,
        epsilon,
        epsilon_report,
        steps_for,
    )
    from jaxcurv.privacy.audit import (  # noqa: F401
        OneRunAudit,
        canary_inclusion,
        epsilon_lower_bound,
        one_run_audit_scan,
        one_run_epsilon_from_counts,
        one_run_epsilon_lower_bound,
        one_run_max_epsilon,
        one_run_p_value,
    )
    from jaxcurv.privacy.dpsgd import (  # noqa: F401
        PrivateGradientInfo,
        clip_per_example,
        dense_dp_gradient,
        dense_norms_apply,
        dp_gradient,
        dp_value_and_grad,
        per_example_gradients,
        private_gradient,
    )
    from jaxcurv.privacy.plan import (  # noqa: F401
        ACCOUNTANTS,
        DPConfig,
        DPPlan,
        PoissonSampler,
        ensemble_poisson_batches,
        max_batch_size,
        poisson_batches,
        poisson_plan,
    )
    from jaxcurv.privacy.rdp import poisson_gaussian_log_a, poisson_gaussian_rdp  # noqa: F401
    from jaxcurv.privacy.theory import (  # noqa: F401
        CurvaturePrivacyFit,
        LossBoundFit,
        MemorizationCurvatureFit,
        curvature_bound,
        curvature_bound_model,
        fit_curvature_privacy,
        fit_loss_bound,
        fit_memorization_curvature,
        loss_bound_model,
        memorization_bound,
        stability_bound,
    )


# The names load their module on first use (one helper for every lazy package: jaxcurv._lazy).
__getattr__, __dir__ = lazy_names(__name__, {**_MODULE_OF, **{module: "" for module in _EXPORTS}},
                                  globals())
