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

import errno
import hashlib
import json
import logging
import os
import shutil
import sys
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxcurv.errors import OutputError

__all__ = ["Checkpoints", "fingerprint", "clean_checkpoints"]

_RUN_FILE = "run.json"
_CHECKSUM_FILE = "checksum.json"
_CLEANUP_SECONDS, _CLEANUP_QUIET = 5.0, 0.25  # removing what a failed save left (seconds)
_SPACE_FACTOR = 0.9  # a checkpoint takes about the bytes of its arrays (OCDBT, uncompressed)


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
    """Write ``value`` to ``path`` atomically (temporary file renamed into place; removed when the
    write fails)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(value))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class _HeldErrors(logging.Filter):
    """Holds back ERROR records (a failed save's traceback, logged by orbax's writer thread) while
    a save runs: a failure is reported once, as the OutputError; after a success they are shown."""

    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        self.records.append(record)
        return False


def _write_reason(err: BaseException) -> str:
    """Why a write failed, in one line: the OS error when one is named (tensorstore's messages end
    with "...: No space left on device [os_error_code='28']"), else the first line."""
    for cause in (err, err.__cause__, err.__context__):
        if isinstance(cause, OSError) and cause.errno:
            return os.strerror(cause.errno)
    code = getattr(err, "errno", None)
    if isinstance(code, int) and code:
        return os.strerror(code)
    text = str(err).strip()
    first = text.splitlines()[0] if text else ""
    if len(first) > 160:  # keep the end, where tensorstore names the OS error
        first = "…" + first[-140:]
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


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
        step_dir = self._step_dir(chunk, epoch)
        self._check_space(step_dir, (state, history))
        held = _HeldErrors()
        logger = logging.getLogger("absl")  # orbax logs a failed write's traceback there
        logger.addFilter(held)
        try:
            manager.save(epoch, args=args.Composite(state=args.StandardSave(state),
                                                    history=args.StandardSave(history)),
                         force=True)
            manager.wait_until_finished()
            _write_json(step_dir / _CHECKSUM_FILE, {"fingerprint": self.fingerprint,
                                                    "step": int(epoch),
                                                    "files": _file_digests(step_dir)})
        except Exception as err:  # orbax/tensorstore report a full disk as a bare ValueError
            logger.removeFilter(held)
            self._remove_partial(chunk, epoch)
            raise OutputError(f"could not save the training checkpoint {step_dir} "
                              f"({_write_reason(err)}); free space there (or choose another "
                              "output folder) and rerun: training resumes from the last "
                              "complete checkpoint") from err
        logger.removeFilter(held)
        for record in held.records:  # the save succeeded: nothing to summarize, show them
            logger.handle(record)

    def _check_space(self, step_dir: Path, tree) -> None:
        """Refuse a save the disk cannot hold before orbax starts it: its parallel writers fail
        one by one on a full disk, which is slow to clean up after."""
        needed = int(_SPACE_FACTOR * sum(int(getattr(leaf, "nbytes", 0))
                                         for leaf in jax.tree.leaves(tree)))
        try:
            free = shutil.disk_usage(self.directory).free
        except OSError:
            return
        if free < needed:
            raise OutputError(
                f"could not save the training checkpoint {step_dir} ({os.strerror(errno.ENOSPC)}: "
                f"it needs about {needed / 1e6:.3g} MB, {free / 1e6:.3g} MB are free); free space "
                "there (or choose another output folder) and rerun: training resumes from the "
                "last complete checkpoint")

    def _remove_partial(self, chunk: int, epoch: int) -> None:
        """Delete what a failed save of ``epoch`` left (orbax's *.orbax-checkpoint-tmp folders
        and an unfinished step), so no temporary file stays behind."""
        self._managers.pop(chunk, None)  # a fresh manager rereads the steps on disk
        folder = self.directory / f"chunk_{chunk:04d}"

        def leftovers() -> list[Path]:
            return [p for p in [self._step_dir(chunk, epoch), *folder.glob(f"{epoch}.*tmp*")]
                    if p.exists()]

        # tensorstore's writer threads may still be failing on other arrays and recreate their
        # folders for a moment after the error: remove until nothing comes back for a while.
        # Meanwhile their completion callbacks find orbax's event loop closed and raise
        # RuntimeErrors nobody can catch ("unraisable"): held back here, the failure is
        # reported once, as the OutputError.
        previous_hook = sys.unraisablehook

        def hold_back_closed_loop(unraisable) -> None:
            if not isinstance(unraisable.exc_value, RuntimeError):
                previous_hook(unraisable)

        sys.unraisablehook = hold_back_closed_loop
        try:
            quiet_since, deadline = time.monotonic(), time.monotonic() + _CLEANUP_SECONDS
            while time.monotonic() < deadline:
                found = leftovers()
                for path in found:
                    shutil.rmtree(path, ignore_errors=True)
                if found:
                    quiet_since = time.monotonic()
                elif time.monotonic() - quiet_since > _CLEANUP_QUIET:
                    return
                time.sleep(0.02)
        finally:
            sys.unraisablehook = previous_hook


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
