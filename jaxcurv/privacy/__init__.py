"""Differential privacy: DP-SGD, accounting, the papers' bounds, empirical auditing."""

from jaxcurv.privacy.accounting import (
    ACCOUNTANTS,
    TF_PRIVACY_LEGACY_ORDERS,
    calibrate_noise_multiplier,
    dpsgd_event,
    epsilon,
    steps_for,
)
from jaxcurv.privacy.audit import (
    OneRunAudit,
    canary_inclusion,
    epsilon_lower_bound,
    one_run_audit_scan,
    one_run_epsilon_from_counts,
    one_run_epsilon_lower_bound,
    one_run_max_epsilon,
    one_run_p_value,
)
from jaxcurv.privacy.dpsgd import (
    DPConfig,
    DPPlan,
    PrivateGradientInfo,
    clip_per_example,
    dp_gradient,
    ensemble_poisson_batches,
    max_batch_size,
    per_example_gradients,
    poisson_batches,
    private_gradient,
)
from jaxcurv.privacy.theory import (
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

__all__ = [
    # accounting
    "ACCOUNTANTS",
    "TF_PRIVACY_LEGACY_ORDERS",
    "calibrate_noise_multiplier",
    "dpsgd_event",
    "epsilon",
    "steps_for",
    # dpsgd
    "DPConfig",
    "DPPlan",
    "PrivateGradientInfo",
    "clip_per_example",
    "dp_gradient",
    "ensemble_poisson_batches",
    "max_batch_size",
    "per_example_gradients",
    "poisson_batches",
    "private_gradient",
    # theory
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
    # audit
    "OneRunAudit",
    "canary_inclusion",
    "epsilon_lower_bound",
    "one_run_audit_scan",
    "one_run_epsilon_from_counts",
    "one_run_epsilon_lower_bound",
    "one_run_max_epsilon",
    "one_run_p_value",
]
