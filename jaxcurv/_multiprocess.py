"""Multi-process jobs for ensembles (private): each process computes its block of members
(:func:`jaxcurv.distributed.process_members`), then every process gathers all of them; in a single
process every helper here is the identity."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np

from jaxcurv import distributed
from jaxcurv._checkpoints import Checkpoints

__all__ = ["_process_share", "_gather_share", "_process_block", "_SharedCheckpoints", "_shared"]



def _process_share(rows: np.ndarray) -> tuple[np.ndarray, tuple | None]:
    """(rows this process computes, share for :func:`_gather_share`): in a multi-process job its
    block of ``rows``; a process without one computes one row as a stand-in and contributes none."""
    if jax.process_count() == 1:
        return rows, None
    positions = distributed.process_members(len(rows))
    local = rows[positions] if len(positions) else rows[[jax.process_index() % len(rows)]]
    return local, (positions, len(rows))


def _gather_share(tree, share: tuple | None):
    """The full result (rows in order) on every process from each process's block."""
    if share is None:
        return tree
    positions, total = share
    mine = jax.tree.map(lambda a: np.asarray(a)[:len(positions)], tree)
    return distributed.gather_members(mine, positions, total)


def _process_block(plan, cfg):
    """(full plan, this process's plan, settings). In a multi-process job the process trains its
    block of members, repeated up to the largest block so that every process runs the same chunks
    (their checkpoints are saved together), under <checkpoint_dir>/processes-P-chunk-C."""
    if jax.process_count() == 1:
        return plan, plan, cfg
    k_total, procs = plan.masks.shape[0], jax.process_count()
    if cfg.devices is None and jax.device_count() != procs * jax.local_device_count():
        raise ValueError("every process of the job must have the same number of devices; pass "
                         "devices= with the same count on each")
    block = distributed.process_members(k_total)
    rows = np.resize(block if len(block) else [jax.process_index() % k_total], -(-k_total // procs))
    chunk_k = cfg.members_per_chunk or (1 if jax.default_backend() == "cpu" else len(rows))
    chunk_k = -(-chunk_k // len(plan.devices)) * len(plan.devices)
    local = dataclasses.replace(plan, masks=plan.masks[rows], member_ids=plan.member_ids[rows],
                                subsets=[plan.subsets[r] for r in rows], chunk_k=chunk_k)
    if cfg.checkpoint_dir is not None:
        folder = Path(cfg.checkpoint_dir) / f"processes-{procs}-chunk-{chunk_k}"
        cfg = dataclasses.replace(cfg, checkpoint_dir=folder)
    return plan, local, cfg


class _SharedCheckpoints:
    """Checkpoints of a multi-process job: chunk c of every process is one orbax checkpoint,
    saved and restored by all processes together (orbax writes host arrays from process 0 only,
    so the chunk's states are first gathered: one all-gather per saved epoch); each process keeps
    its own rows on restore."""

    def __init__(self, inner: Checkpoints):
        self.inner = inner

    def save(self, chunk: int, epoch: int, state, history: dict, *, final: bool) -> None:
        if not (final or epoch % self.inner.every == 0):
            return
        moved = {k: np.moveaxis(np.asarray(v), 1, 0) for k, v in history.items()}
        state, moved = distributed.gather_rows((state, moved))
        self.inner.save(chunk, epoch, state, {k: np.moveaxis(v, 0, 1) for k, v in moved.items()},
                        final=final)

    def restore(self, chunk: int, like_state):
        procs, n = jax.process_count(), jax.tree.leaves(like_state)[0].shape[0]
        like = jax.tree.map(lambda a: jax.ShapeDtypeStruct((procs * n, *a.shape[1:]), a.dtype),
                            like_state)
        restored = self.inner.restore(chunk, like)
        if restored is None:
            return None
        done, state, history = restored
        mine = slice(jax.process_index() * n, (jax.process_index() + 1) * n)
        state = jax.tree.map(lambda a, ref: jax.device_put(np.asarray(a)[mine], ref.sharding),
                             state, like_state)
        return done, state, {k: np.asarray(v)[:, mine] for k, v in history.items()}


def _shared(checkpoints: Checkpoints):
    """``checkpoints`` as the chunks of all processes see them (itself in a single process)."""
    return checkpoints if jax.process_count() == 1 else _SharedCheckpoints(checkpoints)
