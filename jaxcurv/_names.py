"""Names shared by the primitives and the workflow, declared once (jax-free, so the command
line's help can list them without importing jax)."""

from __future__ import annotations

__all__ = ["OPTIMIZERS", "GNR_HVPS", "CURVATURE_METHODS", "ZERO_ORDER_METHODS", "ACCOUNTANTS"]

OPTIMIZERS = ("sgd", "adam", "sam", "sam-gnr")
GNR_HVPS = ("exact", "finite_difference")
CURVATURE_METHODS = ("hutchinson", "exact", "finite_difference")
ZERO_ORDER_METHODS = ("central", "mixed")
ACCOUNTANTS = ("rdp", "pld", "rdp_classic")
