"""jaxcurv: input-loss curvature, memorization, membership inference and DP audits in JAX."""

__version__ = "0.1.0"

__all__ = ["__version__"]
