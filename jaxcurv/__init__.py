"""jaxcurv: input-loss curvature, memorization, membership inference and DP audits in JAX.

Top level: the curvature core (``hvp``, ``input_curvature``, ``zero_order_curvature``,
``Curvature`` and the ``make_*`` constructors that return held estimators), ``audit`` (every
stage of ``jaxcurv audit`` on your own model and data: ``jaxcurv.workflow.audit.audit``) and the
library's primitive packages: ``data``, ``models``, ``model_interface``, ``optim``,
``training``, ``ensemble``, ``memorization``, ``adversarial``, ``mia``, ``privacy``,
``distributed``. ``jaxcurv.workflow`` combines them into the audit and the experiments;
``jaxcurv.report`` draws the figures and writes the result files; ``jaxcurv.cli`` is the
``jaxcurv`` command. Everything loads on first use, so the command's ``--help`` imports no jax.
"""

from jaxcurv._lazy import lazy_names

__version__ = "0.1.0"

_CURVATURE_NAMES = ("Curvature", "hvp", "input_curvature", "make_curvature_fn",
                    "make_input_curvature", "make_reference_score", "make_zero_order_curvature",
                    "reference_score", "zero_order_curvature", "zero_order_queries")
_PRIMITIVES = ("curvature", "data", "models", "model_interface", "optim", "training", "ensemble",
               "memorization", "adversarial", "mia", "privacy", "distributed")

__all__ = ["__version__", "audit", *_CURVATURE_NAMES, *_PRIMITIVES]

__getattr__, __dir__ = lazy_names(
    __name__, {"audit": ".workflow.audit", **{name: ".curvature" for name in _CURVATURE_NAMES},
               **{name: "" for name in (*_PRIMITIVES, "workflow", "report", "errors")}},
    globals())
