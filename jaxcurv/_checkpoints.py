"""Resumable training checkpoints (private): orbax managers per member chunk, keyed on content and
verified on restore.

A run directory holds ``run.json`` with the fingerprint of everything that determines the result
(model, the full content of images, labels and masks, member ids, seed, settings); a directory of
another run is refused. Each saved step ``chunk_XXXX/<epoch>/`` gets ``checksum.json`` (the run
fingerprint and the sha256 of every file orbax wrote for it), written last, after orbax finished.
Before a restore the step's files are hashed and compared, so orbax never reads a damaged file: a
step with flipped bits, a truncated or missing file, or no checksum (a kill mid-write) is deleted
with a one-line ``RuntimeWarning`` and the previous step (or a fresh start) is used instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jax
import numpy as np

__all__ = ["Checkpoints", "fingerprint", "clean_checkpoints"]

_RUN_FILE = "run.json"
_CHECKSUM_FILE = "checksum.json"


def _file_digests(step_dir: Path) -> dict[str, str]:
    """sha256 of every file under ``step_dir`` but the checksum file, by relative path."""
    digests = {}
    for path in sorted(p for p in step_dir.rglob("*") if p.is_file()):
        if path.name != _CHECKSUM_FILE:
            with open(path, "rb") as f:
                digests[path.relative_to(step_dir).as_posix()] = hashlib.file_digest(
                    f, "sha256").hexdigest()
    return digests


def _mismatch(step_dir: Path, expected: Any) -> str | None:
    """Why the files of ``step_dir`` differ from ``expected`` (path → sha256), None if they
    match."""
    if not isinstance(expected, dict) or not expected:
        return "its checksum lists no files"
    actual = _file_digests(step_dir)
    for name, digest in expected.items():
        if name not in actual:
            return f"file {name} is missing"
        if actual[name] != digest:
            return f"file {name} does not match its checksum"
    return None


def _write_json(path: Path, value: dict) -> None:
    """Write ``value`` to ``path`` atomically (temporary file renamed into place)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


def _reason(err: BaseException) -> str:
    """A one-line description of ``err`` (tensorstore messages span many lines)."""
    if "tensorstore" in str(err).lower():
        return "a damaged or truncated array file"
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {first[:160]}" if first else type(err).__name__


def _read_fingerprint(meta: Path) -> str | None:
    """The fingerprint stored in run.json, None (with a notice) when the file is unreadable."""
    try:
        saved = json.loads(meta.read_text()).get("fingerprint")
        if isinstance(saved, str):
            return saved
        raise ValueError("no fingerprint")
    except (OSError, ValueError, AttributeError) as err:
        warnings.warn(f"checkpoint file {meta} is unreadable ({_reason(err)}); rewriting it, each "
                      "checkpoint is still verified before use", RuntimeWarning, stacklevel=4)
        return None


class Checkpoints:
    """One orbax CheckpointManager per member chunk under ``directory``; run.json pins the config."""

    def __init__(self, directory: str | os.PathLike, fingerprint: str, every: int):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.directory = Path(directory).absolute()
        self.fingerprint = fingerprint
        self.every = every
        meta = self.directory / _RUN_FILE
        if self.directory.exists() and not self.directory.is_dir():
            raise ValueError(f"checkpoint_dir {self.directory} is a file; pass a folder")
        saved = _read_fingerprint(meta) if meta.exists() else None
        if saved is not None and saved != fingerprint:
            raise ValueError(
                f"checkpoint_dir {self.directory} holds a run with a different configuration "
                "(model, data, masks, key or training settings); use a new directory or "
                "delete this one"
            )
        if saved is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            _write_json(meta, {"fingerprint": fingerprint})
        self._managers: dict[int, Any] = {}

    def _manager(self, chunk: int):
        if chunk not in self._managers:
            options = self._ocp.CheckpointManagerOptions(max_to_keep=2, create=True,
                                                         enable_async_checkpointing=False)
            self._managers[chunk] = self._ocp.CheckpointManager(
                self.directory / f"chunk_{chunk:04d}", options=options)
        return self._managers[chunk]

    def _step_dir(self, chunk: int, step: int) -> Path:
        return self.directory / f"chunk_{chunk:04d}" / str(step)

    def _verified(self, chunk: int, step: int, like_state):
        """(state, history) of ``step`` if its files match its checksum and restore, else the
        reason they do not (a string)."""
        args = self._ocp.args
        try:
            stored = json.loads((self._step_dir(chunk, step) / _CHECKSUM_FILE).read_text())
        except FileNotFoundError:
            return "no checksum: its write did not complete"
        except (OSError, ValueError) as err:
            return f"unreadable checksum: {_reason(err)}"
        if not isinstance(stored, dict) or stored.get("fingerprint") != self.fingerprint:
            return "its checksum belongs to another configuration"
        mismatch = _mismatch(self._step_dir(chunk, step), stored.get("files"))
        if mismatch is not None:
            return mismatch
        try:
            abstract = jax.tree.map(
                lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype,
                                               sharding=getattr(a, "sharding", None)), like_state)
            restored = self._manager(chunk).restore(step, args=args.Composite(
                state=args.StandardRestore(abstract), history=args.StandardRestore()))
            history = {k: np.asarray(v) for k, v in restored["history"].items()}
            state = restored["state"]
        except Exception as err:  # orbax/tensorstore raise bare Exceptions for damaged files
            return _reason(err)
        return state, history

    def _discard(self, chunk: int, step: int) -> None:
        """Delete ``step`` of ``chunk`` so that a later save of that epoch starts clean."""
        manager = self._manager(chunk)
        try:
            manager.delete(step)
        except Exception:  # a damaged step may confuse orbax's own deletion
            shutil.rmtree(self._step_dir(chunk, step), ignore_errors=True)
            manager.reload()

    def restore(self, chunk: int, like_state):
        """(epochs done, state, history dict) of the latest verified checkpoint, or None.

        A step that fails verification is deleted with a one-line RuntimeWarning; the previous
        step is tried next."""
        manager = self._manager(chunk)
        for step in sorted(manager.all_steps(), reverse=True):
            result = self._verified(chunk, step, like_state)
            if not isinstance(result, str):
                return int(step), result[0], result[1]
            older = [s for s in manager.all_steps() if s < step]
            fallback = f"epoch {max(older)}" if older else "the start"
            warnings.warn(f"checkpoint {self._step_dir(chunk, step)} failed verification "
                          f"({result}); discarded, resuming from {fallback}", RuntimeWarning,
                          stacklevel=3)
            self._discard(chunk, step)
        return None

    def save(self, chunk: int, epoch: int, state, history: dict, *, final: bool) -> None:
        """Save epoch ``epoch`` (every ``every`` epochs and the final one), then its checksum."""
        if not (final or epoch % self.every == 0):
            return
        args = self._ocp.args
        manager = self._manager(chunk)
        manager.save(epoch, args=args.Composite(state=args.StandardSave(state),
                                                history=args.StandardSave(history)), force=True)
        manager.wait_until_finished()
        step_dir = self._step_dir(chunk, epoch)
        _write_json(step_dir / _CHECKSUM_FILE, {"fingerprint": self.fingerprint,
                                                "step": int(epoch),
                                                "files": _file_digests(step_dir)})


def fingerprint(model, dataset, masks, member_ids, seed, echo: dict) -> str:
    """sha256 of the model, settings echo, the full bytes (with dtype and shape) of the images,
    labels, masks and member ids, the number of classes and the seed."""
    h = hashlib.sha256()
    h.update(repr(model).encode())
    h.update(json.dumps(echo, sort_keys=True, default=str).encode())
    for arr in (dataset.images, dataset.labels, masks, np.asarray(member_ids)):
        a = np.ascontiguousarray(arr)
        h.update(f"|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    h.update(str((dataset.num_classes, seed)).encode())
    return h.hexdigest()


def clean_checkpoints(root: str | os.PathLike, keep: Iterable[str]) -> list[Path]:
    """Delete the checkpoint folders directly under ``root`` (folders holding a run.json) whose
    names are not in ``keep``; returns the deleted paths. Other files and folders are left alone."""
    keep = {str(k) for k in ([keep] if isinstance(keep, str) else keep)}
    bad = sorted(k for k in keep if not k or "/" in k or "\\" in k)
    if bad:
        raise ValueError(f"keep must hold folder names under root (no path separators), got {bad}")
    root = Path(root)
    if not root.is_dir():
        return []
    removed = []
    for folder in sorted(root.iterdir()):
        if folder.name in keep or not folder.is_dir() or folder.is_symlink():
            continue
        if (folder / _RUN_FILE).is_file():
            shutil.rmtree(folder)
            removed.append(folder)
    return removed
