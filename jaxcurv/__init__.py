"""jaxcurv: input-loss curvature, memorization, membership inference and DP audits in JAX.

Top level: the curvature core (``hvp``, ``input_curvature``, ``zero_order_curvature``,
``Curvature``). Submodules: ``data``, ``models``, ``ensemble``, ``optim``, ``training``,
``memorization``, ``mia``, ``privacy``, ``report``, ``pipeline`` (the audit), ``cli``.
"""

import importlib

from jaxcurv.curvature import (
    Curvature,
    hvp,
    input_curvature,
    make_curvature_fn,
    reference_score,
    zero_order_curvature,
    zero_order_queries,
)

__version__ = "0.1.0"

_SUBMODULES = ("curvature", "data", "models", "optim", "training", "ensemble", "memorization",
               "mia", "privacy", "report", "pipeline", "cli")

__all__ = [
    "__version__",
    "Curvature",
    "hvp",
    "input_curvature",
    "make_curvature_fn",
    "reference_score",
    "zero_order_curvature",
    "zero_order_queries",
    *_SUBMODULES,
]


def __getattr__(name: str):
    """Submodules load on first use (``jaxcurv.mia`` needs no import of its own)."""
    if name in _SUBMODULES:
        return importlib.import_module(f"jaxcurv.{name}")
    raise AttributeError(f"module 'jaxcurv' has no attribute {name!r}")
