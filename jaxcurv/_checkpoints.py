"""Resumable training checkpoints (private): orbax managers per member chunk, keyed on content.

A run directory holds ``run.json`` with the fingerprint of everything that determines the result
(model, data, masks, member ids, seed, settings); a directory of another run is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

__all__ = ["Checkpoints", "fingerprint"]


class Checkpoints:
    """One orbax CheckpointManager per member chunk under ``directory``; run.json pins the config."""

    def __init__(self, directory: str | os.PathLike, fingerprint: str, every: int):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.directory = Path(directory).absolute()
        self.every = every
        meta = self.directory / "run.json"
        if meta.exists():
            saved = json.loads(meta.read_text()).get("fingerprint")
            if saved != fingerprint:
                raise ValueError(
                    f"checkpoint_dir {self.directory} holds a run with a different configuration "
                    "(model, data, masks, key or training settings); use a new directory or "
                    "delete this one"
                )
        else:
            self.directory.mkdir(parents=True, exist_ok=True)
            meta.write_text(json.dumps({"fingerprint": fingerprint}))
        self._managers: dict[int, Any] = {}

    def _manager(self, chunk: int):
        if chunk not in self._managers:
            options = self._ocp.CheckpointManagerOptions(max_to_keep=2, create=True,
                                                         enable_async_checkpointing=False)
            self._managers[chunk] = self._ocp.CheckpointManager(
                self.directory / f"chunk_{chunk:04d}", options=options)
        return self._managers[chunk]

    def restore(self, chunk: int, like_state):
        """(epochs done, state, history dict) of the latest checkpoint, or None."""
        manager = self._manager(chunk)
        step = manager.latest_step()
        if step is None:
            return None
        args = self._ocp.args
        abstract = jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=getattr(a, "sharding", None)),
            like_state)
        restored = manager.restore(step, args=args.Composite(
            state=args.StandardRestore(abstract), history=args.StandardRestore()))
        history = {k: np.asarray(v) for k, v in restored["history"].items()}
        return int(step), restored["state"], history

    def save(self, chunk: int, epoch: int, state, history: dict, *, final: bool) -> None:
        if not (final or epoch % self.every == 0):
            return
        args = self._ocp.args
        manager = self._manager(chunk)
        manager.save(epoch, args=args.Composite(state=args.StandardSave(state),
                                                history=args.StandardSave(history)), force=True)
        manager.wait_until_finished()


def fingerprint(model, dataset, masks, member_ids, seed, echo: dict) -> str:
    """sha256 of the model, settings echo, masks, member ids, labels, image sum/shape and seed."""
    h = hashlib.sha256()
    h.update(repr(model).encode())
    h.update(json.dumps(echo, sort_keys=True, default=str).encode())
    for arr in (masks, np.asarray(member_ids), dataset.labels):
        h.update(np.ascontiguousarray(arr).tobytes())
    h.update(np.float64(dataset.images.sum(dtype=np.float64)).tobytes())
    h.update(str((dataset.images.shape, seed)).encode())
    return h.hexdigest()
