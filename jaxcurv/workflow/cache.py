"""The stage cache: outputs of costly stages (dicts of arrays) stored as npz files keyed on content.

A stage's key is everything its result depends on — settings, a fingerprint of the data actually
used, of the ensemble it reads — hashed by :func:`fingerprint`. The file
``<directory>/<stage>-<hash>.npz`` stores the arrays with the full key hash and a checksum of
the arrays; on read both are verified, and a file that is unreadable, truncated or belongs to
another key is recomputed, never trusted. Writes go to a temporary file renamed into place, so a
killed run leaves no half-written entry and a rerun resumes from the stages already done.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from jaxcurv.workflow.timing import Timer

__all__ = ["fingerprint", "ensemble_fingerprint", "StageCache"]

_KEY = "__key__"
_CHECKSUM = "__checksum__"
_SHORT = 16


def _feed(h: "hashlib._Hash", value: Any) -> None:
    """Feed ``value`` into the hash: arrays by dtype, shape and bytes; containers recursively."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        _feed(h, (type(value).__name__, dataclasses.asdict(value)))
    elif isinstance(value, Mapping):
        h.update(b"{")
        for k in sorted(value, key=str):
            _feed(h, str(k))
            _feed(h, value[k])
        h.update(b"}")
    elif isinstance(value, (list, tuple)):
        h.update(b"[")
        for v in value:
            _feed(h, v)
        h.update(b"]")
    elif isinstance(value, np.ndarray) or hasattr(value, "__array__") and not isinstance(
            value, (str, bytes, int, float, bool)):
        a = np.ascontiguousarray(np.asarray(value))
        h.update(f"array{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    else:
        h.update(json.dumps(value, sort_keys=True, default=repr).encode())


def fingerprint(*parts: Any) -> str:
    """SHA-256 (hex) of ``parts``: JSON values, dataclasses, mappings, sequences and arrays (by
    dtype, shape and content)."""
    h = hashlib.sha256()
    _feed(h, parts)
    return h.hexdigest()


def ensemble_fingerprint(ensemble) -> str:
    """A hash of an ensemble's model, masks and parameters (the first and last four leaves of the
    stacked variables), for the keys of stages computed from it."""
    import jax

    leaves = jax.tree.leaves(ensemble.variables)
    return fingerprint(repr(ensemble.model), np.asarray(ensemble.masks),
                       [np.asarray(leaf) for leaf in leaves[:4] + leaves[-4:]])


def _checksum(arrays: Mapping[str, np.ndarray]) -> str:
    return fingerprint(dict(arrays))


class StageCache:
    """Stage outputs under ``directory``. ``run(name, key, compute)`` returns the cached arrays of
    (name, key) or calls ``compute()`` (a dict of arrays) and stores them.

    timer: records each stage's seconds, or "cached"; log: called with a line per stage (e.g.
    ``print``), None for silence.
    """

    def __init__(self, directory: str | os.PathLike, *, timer: Timer | None = None,
                 log: Callable[[str], Any] | None = None) -> None:
        self.directory = Path(directory)
        self.timer = timer
        self.log = log

    def path(self, name: str, key: Any) -> Path:
        """Where the entry of (name, key) lives."""
        if not name or any(c in name for c in "/\\"):
            raise ValueError(f"stage name must be a non-empty file name, got {name!r}")
        return self.directory / f"{name}-{fingerprint(key)[:_SHORT]}.npz"

    def load(self, name: str, key: Any) -> dict[str, np.ndarray] | None:
        """The verified arrays of (name, key), or None when missing, unreadable or not matching."""
        path = self.path(name, key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError):
            return None
        stored_key, stored_sum = arrays.pop(_KEY, None), arrays.pop(_CHECKSUM, None)
        if stored_key is None or str(stored_key) != fingerprint(key):
            return None
        if stored_sum is None or str(stored_sum) != _checksum(arrays):
            return None
        return arrays

    def save(self, name: str, key: Any, arrays: Mapping[str, Any]) -> Path:
        """Store ``arrays`` as the entry of (name, key), atomically; returns its path."""
        arrays = {str(k): np.asarray(v) for k, v in arrays.items()}
        for k, v in arrays.items():
            if k in (_KEY, _CHECKSUM) or v.dtype == object:
                raise ValueError(f"stage {name!r}: array {k!r} cannot be stored (reserved name or "
                                 "object dtype)")
        path = self.path(name, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, **arrays, **{_KEY: np.asarray(fingerprint(key)),
                                   _CHECKSUM: np.asarray(_checksum(arrays))})
        os.replace(tmp, path)
        return path

    def run(self, name: str, key: Any,
            compute: Callable[[], Mapping[str, Any]]) -> dict[str, np.ndarray]:
        """The arrays of (name, key): from the cache when a verified entry exists, else computed,
        stored and returned."""
        cached = self.load(name, key)
        if cached is not None:
            if self.timer is not None:
                self.timer.mark(name, "cached")
            self._say(f"{name}: cached")
            return cached
        self._say(f"{name} …")
        timer = self.timer if self.timer is not None else Timer()
        with timer(name):
            result = {str(k): np.asarray(v) for k, v in compute().items()}
        self.save(name, key, result)
        self._say(f"{name}: {timer.seconds[name]} s")
        return result

    def _say(self, message: str) -> None:
        if self.log is not None:
            self.log(message)
