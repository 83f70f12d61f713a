"""The stage cache: outputs of costly stages (dicts of arrays) stored as npz files keyed on content.

A stage's key is everything its result depends on — settings, a fingerprint of the data actually
used, of the ensemble it reads — hashed by :func:`fingerprint`. The file
``<directory>/<stage>-<hash>.npz`` stores the arrays with the full key hash and a checksum of
the arrays; on read both are verified, and a file that is unreadable, truncated or belongs to
another key is recomputed (with a one-line notice), never trusted. Writes go to a temporary file
renamed into place, so a killed run leaves no half-written entry and a rerun resumes from the
stages already done; a write that fails (disk full) removes its temporary file and raises
:class:`jaxcurv.errors.OutputError`. :meth:`StageCache.run_chunked` stores a long stage chunk
by chunk (e.g. one ensemble member per chunk), so a kill loses at most one chunk. With
``require_finite`` a stage that produced NaN/inf raises instead of caching them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import warnings
import zipfile
import zlib
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from jaxcurv._validate import check_positive_int
from jaxcurv.errors import OutputError
from jaxcurv.workflow.timing import Timer

__all__ = ["fingerprint", "ensemble_fingerprint", "StageCache"]

_KEY = "__key__"
_CHECKSUM = "__checksum__"
_SHORT = 16
_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError, zlib.error)


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
    """A hash of an ensemble's model, masks, member ids and every leaf of its stacked variables
    (full bytes, dtype and shape, with the tree structure), for the keys of stages computed from
    it: any changed parameter changes the key."""
    import jax

    leaves, tree = jax.tree.flatten(ensemble.variables)
    return fingerprint(repr(ensemble.model), str(tree), np.asarray(ensemble.masks),
                       np.asarray(ensemble.member_ids), [np.asarray(leaf) for leaf in leaves])


def _checksum(arrays: Mapping[str, np.ndarray]) -> str:
    return fingerprint(dict(arrays))


def _nonfinite(name: str, arrays: Mapping[str, np.ndarray],
               require_finite: bool | Collection[str]) -> None:
    """Raise ValueError when the arrays named by ``require_finite`` (True: all) hold NaN/inf."""
    if require_finite is False:
        return
    names = list(arrays) if require_finite is True else list(require_finite)
    missing = sorted(set(names) - set(arrays))
    if missing:
        raise ValueError(f"stage {name!r}: require_finite names arrays it did not produce: "
                         f"{missing}")
    counts = {k: int(arrays[k].size - np.count_nonzero(np.isfinite(arrays[k]))) for k in names
              if np.issubdtype(arrays[k].dtype, np.inexact)}
    bad = {k: c for k, c in counts.items() if c}
    if bad:
        raise ValueError(f"stage {name} produced {sum(bad.values())} non-finite values (in "
                         f"{', '.join(sorted(bad))}); nothing was cached. The inputs or the "
                         "models hold NaN/inf: check the data, or lower --learning-rate")


def _concatenate(name: str, parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The chunks' arrays concatenated along axis 0; every chunk must have the same names."""
    names = sorted(parts[0])
    for i, part in enumerate(parts):
        if sorted(part) != names:
            raise ValueError(f"stage {name!r}: chunk {i} has arrays {sorted(part)}, chunk 0 has "
                             f"{names}; every chunk must return the same names")
        if any(np.ndim(v) == 0 for v in part.values()):
            raise ValueError(f"stage {name!r}: chunk arrays need a leading axis to concatenate")
    return {k: np.concatenate([p[k] for p in parts], axis=0) for k in names}


class StageCache:
    """Stage outputs under ``directory``. ``run(name, key, compute)`` returns the cached arrays of
    (name, key) or calls ``compute()`` (a dict of arrays) and stores them; ``run_chunked`` does the
    same chunk by chunk.

    timer: records each stage's seconds, or "cached"; log: called with a line per stage (e.g.
    ``print``), None for silence; progress: a progress bar over the chunks of ``run_chunked``.
    Notices about damaged files go to ``log``, or without one to ``warnings.warn``
    (RuntimeWarning).
    """

    def __init__(self, directory: str | os.PathLike, *, timer: Timer | None = None,
                 log: Callable[[str], Any] | None = None, progress: bool = False) -> None:
        self.directory = Path(directory)
        self.timer = timer
        self.log = log
        self.progress = progress

    def path(self, name: str, key: Any) -> Path:
        """Where the entry of (name, key) lives."""
        return self._path(name, key)

    def _path(self, name: str, key: Any, suffix: str = "") -> Path:
        if not name or any(c in name for c in "/\\"):
            raise ValueError(f"stage name must be a non-empty file name, got {name!r}")
        return self.directory / f"{name}-{fingerprint(key)[:_SHORT]}{suffix}.npz"

    def _chunk_path(self, name: str, key: Any, chunk: int, num_chunks: int) -> Path:
        return self._path(name, key, f".chunk{chunk:04d}of{num_chunks:04d}")

    def _read(self, path: Path, full_key: str) -> dict[str, np.ndarray] | str | None:
        """The verified arrays at ``path``; None when missing; the reason when it fails."""
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except _READ_ERRORS as err:
            return f"unreadable: {type(err).__name__}"
        stored_key, stored_sum = arrays.pop(_KEY, None), arrays.pop(_CHECKSUM, None)
        if stored_key is None or str(stored_key) != full_key:
            return "it belongs to another key"
        if stored_sum is None or str(stored_sum) != _checksum(arrays):
            return "its content does not match its checksum"
        return arrays

    def _load(self, path: Path, full_key: str) -> dict[str, np.ndarray] | None:
        result = self._read(path, full_key)
        if isinstance(result, str):
            self._notice(f"cache file {path} failed verification ({result}); recomputing it")
            return None
        return result

    def load(self, name: str, key: Any) -> dict[str, np.ndarray] | None:
        """The verified arrays of (name, key), or None when missing, unreadable or not matching
        (a file that exists but fails verification is reported by a one-line notice)."""
        return self._load(self.path(name, key), fingerprint(key))

    def _write(self, path: Path, full_key: str, name: str,
               arrays: Mapping[str, Any]) -> dict[str, np.ndarray]:
        arrays = {str(k): np.asarray(v) for k, v in arrays.items()}
        for k, v in arrays.items():
            if k in (_KEY, _CHECKSUM) or v.dtype == object:
                raise ValueError(f"stage {name!r}: array {k!r} cannot be stored (reserved name or "
                                 "object dtype)")
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(tmp, **arrays, **{_KEY: np.asarray(full_key),
                                       _CHECKSUM: np.asarray(_checksum(arrays))})
            os.replace(tmp, path)
        except BaseException as err:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            if isinstance(err, OSError) and not isinstance(err, OutputError):
                raise OutputError(
                    f"could not write the cache entry {path} ({err.strerror or err}); free space "
                    f"under {self.directory} (or use another output folder) and rerun: the "
                    "entries already written are reused") from err
            raise
        return arrays

    def save(self, name: str, key: Any, arrays: Mapping[str, Any]) -> Path:
        """Store ``arrays`` as the entry of (name, key), atomically; returns its path."""
        path = self.path(name, key)
        self._write(path, fingerprint(key), name, arrays)
        return path

    def run(self, name: str, key: Any, compute: Callable[[], Mapping[str, Any]], *,
            require_finite: bool | Collection[str] = False) -> dict[str, np.ndarray]:
        """The arrays of (name, key): from the cache when a verified entry exists, else computed,
        stored and returned. ``require_finite`` (True: every float array; or a collection of
        names): a result with NaN/inf there raises ValueError instead of being cached."""
        cached = self.load(name, key)
        if cached is not None:
            return self._cached(name, cached)
        self._say(f"{name} …")
        timer = self.timer if self.timer is not None else Timer()
        with timer(name):
            result = {str(k): np.asarray(v) for k, v in compute().items()}
        _nonfinite(name, result, require_finite)
        self.save(name, key, result)
        self._say(f"{name}: {timer.seconds[name]} s")
        return result

    def run_chunked(self, name: str, key: Any, num_chunks: int,
                    compute_chunk: Callable[[int], Mapping[str, Any]], *,
                    require_finite: bool | Collection[str] = False) -> dict[str, np.ndarray]:
        """Like :meth:`run` for a stage computed in ``num_chunks`` parts: ``compute_chunk(i)``
        returns chunk i's arrays, which are stored as soon as they are computed (a kill loses at
        most one chunk) and concatenated along axis 0 into the stage's entry (the chunk files are
        then removed). Verified chunks of an earlier run are reused ("resuming from …"); a damaged
        one is recomputed with a one-line notice."""
        num_chunks = check_positive_int("num_chunks", num_chunks)
        cached = self.load(name, key)
        if cached is not None:
            return self._cached(name, cached)
        full = fingerprint(key)
        paths = [self._chunk_path(name, key, i, num_chunks) for i in range(num_chunks)]
        chunk_keys = [fingerprint(full, i, num_chunks) for i in range(num_chunks)]
        parts = [self._load(p, k) for p, k in zip(paths, chunk_keys)]
        done = sum(p is not None for p in parts)
        self._say(f"{name}: resuming from {done} of {num_chunks} cached chunks" if done
                  else f"{name} …")
        timer = self.timer if self.timer is not None else Timer()
        bar = tqdm(total=num_chunks, initial=done, desc=name, unit="chunk", leave=False,
                   disable=not self.progress or done == num_chunks)
        with timer(name), bar:
            for i, part in enumerate(parts):
                if part is None:
                    part = {str(k): np.asarray(v) for k, v in compute_chunk(i).items()}
                    _nonfinite(f"{name} (chunk {i})", part, require_finite)
                    parts[i] = self._write(paths[i], chunk_keys[i], name, part)
                    self._say(f"{name}: chunk {i + 1} of {num_chunks} done")
                    bar.update()
            result = _concatenate(name, parts)
        self.save(name, key, result)
        for path in paths:
            path.unlink(missing_ok=True)
        self._say(f"{name}: {timer.seconds[name]} s")
        return result

    def describe_resume(self, stages: Mapping[str, Any]) -> str | None:
        """"resuming from <directory>: a, b cached; c 3 of 8 chunks" for the (name → key) entries
        that exist (files present, verified only when read), or None when there is none."""
        whole, partial = [], []
        for name, key in stages.items():
            if self.path(name, key).is_file():
                whole.append(name)
                continue
            chunks = sorted(p for p in self.directory.glob(
                f"{self.path(name, key).stem}.chunk*of*.npz") if not p.name.endswith(".tmp.npz"))
            if chunks:
                total = int(chunks[-1].stem.rsplit("of", 1)[-1])
                partial.append(f"{name} {len(chunks)} of {total} chunks")
        if not whole and not partial:
            return None
        parts = ([f"{', '.join(whole)} cached"] if whole else []) + partial
        return f"resuming from {self.directory}: {'; '.join(parts)}"

    def clean_temporary(self) -> list[Path]:
        """Remove the temporary files of killed writes (call it only while holding the output
        folder's lock: another run's write in progress looks the same); returns them."""
        stale = sorted(self.directory.glob("*.tmp.npz")) if self.directory.is_dir() else []
        for path in stale:
            path.unlink(missing_ok=True)
        return stale

    def _cached(self, name: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.timer is not None:
            self.timer.mark(name, "cached")
        self._say(f"{name}: cached")
        return arrays

    def _say(self, message: str) -> None:
        if self.log is not None:
            self.log(message)

    def _notice(self, message: str) -> None:
        if self.log is not None:
            self.log(message)
        else:
            warnings.warn(message, RuntimeWarning, stacklevel=4)
