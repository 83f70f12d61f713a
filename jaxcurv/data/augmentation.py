"""Pure-JAX image augmentation with static shapes (usable inside ``jit`` and ``vmap``, one key per
member and per image), and per-channel statistics for normalization."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcurv._validate import check_int

__all__ = [
    "PAD_MODES",
    "random_crop",
    "random_flip",
    "augment",
    "augment_batch",
    "channel_stats",
    "normalize",
]

PAD_MODES = ("constant", "reflect")


def _check_aug(shape: Any, padding: int, pad_mode: str) -> None:
    if shape is None or len(shape) != 3:
        raise ValueError(
            f"expected one image of shape (H, W, C), got shape {shape}; "
            "use augment_batch for (N, H, W, C)."
        )
    check_int("padding", padding, minimum=0)
    if pad_mode not in PAD_MODES:
        raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}.")
    h, w = shape[0], shape[1]
    if pad_mode == "reflect" and padding >= min(h, w):
        raise ValueError(
            f"reflect padding needs padding < min(H, W) = {min(h, w)}, got {padding}."
        )


def random_crop(
    key: jax.Array, image: jax.Array, *, padding: int = 4, pad_mode: str = "constant"
) -> jax.Array:
    """Pads (H, W, C) by ``padding`` on each side (zeros, or "reflect"), crops H×W at a uniform
    offset (dy, dx) ∈ {0..2·padding}²: out[i, j] = padded[dy + i, dx + j]. Same shape and dtype."""
    _check_aug(getattr(image, "shape", None), padding, pad_mode)
    image = jnp.asarray(image)
    h, w, c = image.shape
    p = int(padding)
    padded = jnp.pad(image, ((p, p), (p, p), (0, 0)), mode=pad_mode)
    offset = jax.random.randint(key, (2,), 0, 2 * p + 1)
    zero = jnp.zeros((), offset.dtype)
    return jax.lax.dynamic_slice(padded, (offset[0], offset[1], zero), (h, w, c))


def random_flip(key: jax.Array, image: jax.Array) -> jax.Array:
    """Horizontal flip (W axis of (H, W, C)) with probability 1/2."""
    if getattr(image, "ndim", None) != 3:
        raise ValueError(
            f"expected one image of shape (H, W, C), got {getattr(image, 'shape', None)}."
        )
    image = jnp.asarray(image)
    return jnp.where(jax.random.bernoulli(key), image[:, ::-1, :], image)


def augment(
    key: jax.Array,
    image: jax.Array,
    *,
    padding: int = 4,
    flip: bool = True,
    pad_mode: str = "constant",
) -> jax.Array:
    """``random_flip(k2, random_crop(k1, image))`` for one (H, W, C) image; k1, k2 = split(key)."""
    k_crop, k_flip = jax.random.split(key)
    out = random_crop(k_crop, image, padding=padding, pad_mode=pad_mode)
    return random_flip(k_flip, out) if flip else out


def augment_batch(
    key: jax.Array,
    images: jax.Array,
    *,
    padding: int = 4,
    flip: bool = True,
    pad_mode: str = "constant",
) -> jax.Array:
    """Augments (N, H, W, C) with one key per image (split(key, N)), vmapped over N."""
    if getattr(images, "ndim", None) != 4:
        raise ValueError(
            f"expected images of shape (N, H, W, C), got {getattr(images, 'shape', None)}."
        )
    _check_aug(images.shape[1:], padding, pad_mode)
    keys = jax.random.split(key, images.shape[0])
    return jax.vmap(lambda k, x: augment(k, x, padding=padding, flip=flip, pad_mode=pad_mode))(
        keys, images
    )


def channel_stats(images: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation over (N, H, W) of (N, H, W, C); float32 (C,) each."""
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[0] == 0:
        raise ValueError(f"expected non-empty images of shape (N, H, W, C), got {x.shape}.")
    mean = x.mean(axis=(0, 1, 2), dtype=np.float64)
    std = x.std(axis=(0, 1, 2), dtype=np.float64)
    return mean.astype(np.float32), std.astype(np.float32)


def normalize(images: Any, mean: Any, std: Any) -> Any:
    """(images − mean) / std per channel (last axis); works on numpy and JAX arrays, in jit."""
    if not isinstance(std, jax.Array) and np.any(np.asarray(std) <= 0):
        raise ValueError("std must be > 0 in every channel (a constant channel has std 0).")
    return (images - mean) / std
