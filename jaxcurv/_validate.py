"""Boundary checks shared by every public function: one place, one wording.

Each check raises :class:`jaxcurv.errors.ConfigError` (a ``ValueError``) naming the argument and saying what is expected, and returns the
value in canonical form (``int``, ``float``, a numpy array of a fixed dtype). They run on the host
before any compute; never call them inside traced code.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from jaxcurv.errors import ConfigError

__all__ = [
    "check_int",
    "check_positive_int",
    "check_float",
    "check_positive",
    "check_probability",
    "as_bool_array",
    "as_float64_array",
    "as_float_array",
    "check_masks",
]


def check_int(name: str, value: Any, *, minimum: int | None = None,
              maximum: int | None = None) -> int:
    """``value`` as an int; rejects bools, floats and values outside [minimum, maximum]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be an integer <= {maximum}, got {value!r}")
    return value


def check_positive_int(name: str, value: Any) -> int:
    """``value`` as an int >= 1."""
    return check_int(name, value, minimum=1)


def check_float(name: str, value: Any, *, minimum: float | None = None,
                maximum: float | None = None, allow_minimum: bool = True,
                allow_maximum: bool = True) -> float:
    """``value`` as a finite float within the given bounds (inclusive unless told otherwise)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    value = float(value)
    if minimum is not None and (value < minimum or (value == minimum and not allow_minimum)):
        op = ">=" if allow_minimum else ">"
        raise ConfigError(f"{name} must be {op} {minimum}, got {value!r}")
    if maximum is not None and (value > maximum or (value == maximum and not allow_maximum)):
        op = "<=" if allow_maximum else "<"
        raise ConfigError(f"{name} must be {op} {maximum}, got {value!r}")
    return value


def check_positive(name: str, value: Any) -> float:
    """``value`` as a finite float > 0."""
    return check_float(name, value, minimum=0.0, allow_minimum=False)


def check_probability(name: str, value: Any, *, open_low: bool = False,
                      open_high: bool = False) -> float:
    """``value`` as a float in [0, 1] (ends excluded as told)."""
    return check_float(name, value, minimum=0.0, maximum=1.0, allow_minimum=not open_low,
                       allow_maximum=not open_high)


def as_bool_array(name: str, value: Any, *, ndim: int | None = None) -> np.ndarray:
    """A bool array from bools or from numbers that are all 0 or 1."""
    arr = np.asarray(value)
    if ndim is not None and arr.ndim != ndim:
        raise ConfigError(f"{name} must be a {ndim}-d array, got shape {arr.shape}")
    if arr.dtype == bool:
        return arr
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ConfigError(f"{name} must be a boolean array, got dtype {arr.dtype}")
    if arr.size and not np.isin(arr, (0, 1)).all():
        raise ConfigError(f"{name} must be boolean (only True/False or 0/1); it holds other values "
                         "(NaN, fractions or counts): pass a bool array")
    return arr.astype(bool)


def as_float_array(name: str, value: Any, *, ndim: int | None = None,
                   finite: bool = False, dtype=np.float64) -> np.ndarray:
    """A float array (float64 by default); with ``finite`` rejects NaN and ±inf."""
    try:
        arr = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{name} must be a numeric array: {err}") from None
    if ndim is not None and arr.ndim != ndim:
        raise ConfigError(f"{name} must be a {ndim}-d array, got shape {arr.shape}")
    if finite and not np.all(np.isfinite(arr)):
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        raise ConfigError(f"{name} contains {bad} NaN/inf value(s); it must be finite")
    return arr


def as_float64_array(name: str, value: Any, *, ndim: int | None = None) -> np.ndarray:
    """A finite float64 array (NaN/inf rejected)."""
    return as_float_array(name, value, ndim=ndim, finite=True)


def check_masks(name: str, masks: Any, num_examples: int | None = None) -> np.ndarray:
    """Membership masks bool (K, N): True where member k trains on example i; no empty member."""
    masks = as_bool_array(name, masks, ndim=2)
    if num_examples is not None and masks.shape[1] != num_examples:
        raise ConfigError(f"{name} must have shape (K, N={num_examples}) matching the data, "
                         f"got {masks.shape}")
    empty = np.flatnonzero(masks.sum(1) == 0)
    if empty.size:
        raise ConfigError(f"{name}: member(s) {empty.tolist()[:10]} have no training example")
    return masks
