"""Membership inference: attack scores from given statistics, and ROC metrics.

Every attack is a pure host-side function of arrays (numpy or jax) computed in float64 with
numpy/scipy, and returns a float64 numpy array of scores where **higher = more likely member**.
Shapes: N target examples, K shadow (reference) models, A augmentations (queries), C classes,
Z population samples.

Package map (each module imports only the ones above it)::

    _common         validated shadow inputs (t (N, A), s (K, N, A), IN/OUT masks), group moments
    signals         logits → statistics: logit_confidence, true_class_probability,
                    cross_entropy, modified_entropy
    thresholds      loss thresholds: loss_attack, mentr_attack (global);
                    calibrated_loss, attack_r (per example, from shadow losses)
    likelihood      Gaussian likelihood-ratio tests on shadow statistics:
                    lira, curvature_lr, curvature_nll, PAPER_EPS
    rmia            rmia (population-relative likelihood ratio)
    leave_one_out   each ensemble member in turn as the target:
                    leave_one_model_out, rmia_leave_one_model_out
    metrics         roc_metrics, roc_curve, fpr_resolution

Shadow attacks share the signature ``attack(target_stat, shadow_stats, shadow_in, *,
shadow_mask=None, **kw)``: ``lira`` (Carlini et al. 2022), ``calibrated_loss`` (Watson et al.
2022 / Sablayrolles et al. 2019), ``attack_r`` (Ye et al. 2022), ``curvature_lr`` and
``curvature_nll`` (Ravikumar et al. 2024, "Curvature Clues"; corrected statistics or
``paper_compatible=True``); ``leave_one_model_out`` runs any of them over an ensemble. Other
attacks: ``loss_attack`` (Yeom et al. 2018), ``mentr_attack`` (Song & Mittal 2021), ``rmia``
(Zarifzadeh et al. 2024) and ``rmia_leave_one_model_out``. Metrics: ``roc_metrics`` (AUROC,
balanced accuracy, TPR at 0.1 % / 1 % FPR — NaN with a note where the scores cannot resolve
that FPR —, bootstrap CIs), ``roc_curve`` and ``fpr_resolution``.
"""

from jaxcurv.mia.leave_one_out import leave_one_model_out, rmia_leave_one_model_out
from jaxcurv.mia.likelihood import PAPER_EPS, curvature_lr, curvature_nll, lira
from jaxcurv.mia.metrics import fpr_resolution, roc_curve, roc_metrics
from jaxcurv.mia.rmia import rmia
from jaxcurv.mia.signals import (
    cross_entropy,
    logit_confidence,
    modified_entropy,
    true_class_probability,
)
from jaxcurv.mia.thresholds import attack_r, calibrated_loss, loss_attack, mentr_attack

__all__ = [
    "logit_confidence",
    "true_class_probability",
    "cross_entropy",
    "modified_entropy",
    "loss_attack",
    "mentr_attack",
    "calibrated_loss",
    "attack_r",
    "lira",
    "curvature_lr",
    "curvature_nll",
    "rmia",
    "leave_one_model_out",
    "rmia_leave_one_model_out",
    "roc_metrics",
    "roc_curve",
    "fpr_resolution",
    "PAPER_EPS",
]
