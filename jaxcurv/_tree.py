"""Small pytree helpers shared by the modules (private)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["cast_floats", "unstack", "stack", "leading_size"]


def cast_floats(tree: Any, dtype) -> Any:
    """Cast every floating leaf of ``tree`` to ``dtype`` (no-op when dtype is None)."""
    if dtype is None:
        return tree
    return jax.tree.map(
        lambda a: a.astype(dtype) if jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating) else a, tree
    )


def unstack(tree: Any, k: int) -> Any:
    """Entry ``k`` of a pytree whose leaves are stacked on a leading axis."""
    return jax.tree.map(lambda a: a[k], tree)


def stack(trees: list[Any], *, host: bool = False) -> Any:
    """Stack pytrees of equal structure on a new leading axis (numpy when ``host``, else jax)."""
    fn = np.stack if host else jnp.stack
    return jax.tree.map(lambda *a: fn(a), *trees)


def leading_size(tree: Any, what: str) -> int:
    """The leading size n shared by every leaf of ``tree`` (arrays of shape (n, ...)); ValueError
    naming ``what`` when there is no leaf, a scalar leaf or two different sizes."""
    leaves = jax.tree.leaves(tree)
    if not leaves:
        raise ValueError(f"{what} holds no arrays; pass arrays with a leading example axis")
    sizes = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in leaves}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(f"every array of {what} needs the same leading example axis, got "
                         f"leading sizes {sorted(str(s) for s in sizes)}")
    return int(sizes.pop())
