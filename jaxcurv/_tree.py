"""Small pytree helpers shared by the modules (private)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["cast_floats"]


def cast_floats(tree: Any, dtype) -> Any:
    """Cast every floating leaf of ``tree`` to ``dtype`` (no-op when dtype is None)."""
    if dtype is None:
        return tree
    return jax.tree.map(
        lambda a: a.astype(dtype) if jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating) else a, tree
    )
