"""jaxcurv: input-loss curvature, memorization, membership inference and DP audits in JAX.

Top level: the curvature core (``hvp``, ``input_curvature``, ``zero_order_curvature``,
``Curvature`` and the ``make_*`` constructors that return held estimators). Primitives:
``data``, ``models``, ``optim``, ``training``, ``ensemble``, ``memorization``, ``adversarial``,
``mia``, ``privacy``; ``report`` draws figures; ``workflow`` combines them into the audit and
the experiments; ``cli`` is the ``jaxcurv`` command (``pipeline`` is kept as an alias of the
workflow's audit names).
"""

import importlib

_CURVATURE_NAMES = ("Curvature", "hvp", "input_curvature", "make_curvature_fn",
                    "make_input_curvature", "make_reference_score", "make_zero_order_curvature",
                    "reference_score", "zero_order_curvature", "zero_order_queries")

__version__ = "0.1.0"

_SUBMODULES = ("curvature", "data", "models", "model_interface", "optim", "training", "ensemble",
               "memorization", "adversarial", "mia", "privacy", "distributed", "report",
               "workflow", "pipeline", "cli")

__all__ = [
    "__version__",
    "Curvature",
    "hvp",
    "input_curvature",
    "make_curvature_fn",
    "make_input_curvature",
    "make_reference_score",
    "make_zero_order_curvature",
    "reference_score",
    "zero_order_curvature",
    "zero_order_queries",
    *_SUBMODULES,
]


def __getattr__(name: str):
    """The curvature core and the submodules load on first use (``jaxcurv.mia`` needs no import
    of its own; ``jaxcurv --help`` imports no jax)."""
    if name in _CURVATURE_NAMES:
        value = getattr(importlib.import_module("jaxcurv.curvature"), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"jaxcurv.{name}")
    raise AttributeError(f"module 'jaxcurv' has no attribute {name!r}")
