"""Training an ensemble as a run: :mod:`jaxcurv.ensemble`'s pure training of K members plus what a
run needs around it — resumable orbax checkpoints, a progress bar, per-epoch callbacks and
multi-process jobs.

:func:`train_ensemble` plans and compiles once (``ensemble.plan_training``,
``ensemble.make_trainer``), then trains chunk after chunk, epoch after epoch. Checkpoints
(``jaxcurv._checkpoints``) are keyed on the content of everything that determines the result and
verified before use, so a killed run started again with the same arguments resumes to the same
result. In a multi-process job each process trains its block of members
(``jaxcurv.distributed.process_members``) and every process returns the whole ensemble;
:func:`members_across_processes` splits any per-member computation the same way.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from jaxcurv import distributed
from jaxcurv import ensemble as ens_lib
from jaxcurv._checkpoints import Checkpoints, clean_checkpoints, fingerprint
from jaxcurv._validate import check_positive_int
from jaxcurv.data import Dataset
from jaxcurv.errors import ConfigError

__all__ = ["train_ensemble", "members_across_processes", "clean_checkpoints"]


def train_ensemble(model, dataset: Dataset, masks, key: jax.Array,
                   settings: ens_lib.TrainConfig | None = None, *, test: Dataset | None = None,
                   member_ids: Sequence[int] | None = None,
                   checkpoint_dir: str | os.PathLike | None = None, checkpoint_every: int = 1,
                   progress: bool = False, callbacks: Sequence[Callable[[int, dict], None]] = (),
                   **overrides: Any) -> ens_lib.Ensemble:
    """``jaxcurv.ensemble.train`` (same model, data, masks, key and settings: a TrainConfig
    and/or its fields as keywords) with, optionally:

    ``checkpoint_dir``: orbax checkpoints every ``checkpoint_every`` epochs and at the last one;
    the same call resumes from the last one to the same result as an uninterrupted run (each
    checkpoint is verified against a checksum; a damaged one is discarded with a one-line
    RuntimeWarning, never used; a folder of another configuration is refused).
    ``progress``: a progress bar over chunks × epochs. ``callbacks``: ``fn(epoch, info)`` after
    each epoch (0-based), info = {"chunk", "members" (their global ids), "history"}.
    In a multi-process job each process trains its block of members and every process returns
    all K of them (checkpoints then under ``<checkpoint_dir>/processes-P-chunk-C``).
    """
    check_positive_int("checkpoint_every", checkpoint_every)
    if any(not callable(c) for c in callbacks):
        raise ConfigError("callbacks must be functions fn(epoch, info)")
    config = ens_lib.train_config(settings, **overrides)
    full = ens_lib.plan_training(model, dataset, masks, key, config, member_ids=member_ids)
    plan, checkpoint_dir = _process_block(full, checkpoint_dir)
    checkpoints = None
    if checkpoint_dir is not None:
        run_id = fingerprint(plan.model, dataset, full.masks, full.member_ids, plan.seed,
                             plan.echo)
        checkpoints = _shared(Checkpoints(checkpoint_dir, run_id, checkpoint_every))
    trainer = ens_lib.make_trainer(plan, test=test)
    epochs = config.epochs
    what = "DP-SGD" if config.dp is not None else "training"
    k_total = plan.num_members
    bar = tqdm(total=epochs * len(plan.chunks), desc=f"{what} {k_total} members", unit="epoch",
               disable=not progress)
    parts = []
    for c, rows in enumerate(plan.chunks):
        state = trainer.init(rows)
        who = _bar_members(rows, k_total)
        bar.set_postfix_str("")
        if checkpoints is not None:
            restored = checkpoints.restore(c, state.train)
            if restored is not None:
                done, train, history = restored
                state = state._replace(train=train, history=history, epoch=done)
                bar.set_description(f"resuming {who}: epoch {done}/{epochs} restored from its "
                                    "checkpoint")
                bar.update(done)
        while state.epoch < epochs:
            bar.set_description(f"{what} {who}, epoch {state.epoch + 1}/{epochs}")
            state = trainer.epoch(state)
            if checkpoints is not None:
                checkpoints.save(c, state.epoch, state.train, state.history,
                                 final=state.epoch == epochs)
            bar.update(1)
            bar.set_postfix({name: f"{np.mean(state.history[k][-1][:len(rows)]):.3f}"
                             for k, name in (("train_loss", "loss"), ("test_accuracy", "test acc"))
                             if k in state.history})
            for callback in callbacks:
                callback(state.epoch - 1, {"chunk": c, "members": plan.member_ids[rows],
                                           "history": state.history})
        parts.append(trainer.collect(state))
    bar.close()
    return _gathered(trainer.ensemble(parts), full)


def _bar_members(rows: np.ndarray, k_total: int) -> str:
    """The progress bar's "member 5/32" (or "members 1–8/32" for a chunk of several)."""
    lo, hi = int(rows[0]) + 1, int(rows[-1]) + 1
    return f"member {lo}/{k_total}" if lo == hi else f"members {lo}–{hi}/{k_total}"


def members_across_processes(compute: Callable[[np.ndarray], Any], members: Sequence[int]) -> Any:
    """``compute(rows)`` — a pytree whose leaves have a leading axis over ``rows`` — for all
    ``members``, in order. In a multi-process job each process computes its block of them and
    every process gets the whole result (a process without a block computes one row as a
    stand-in and contributes none); in one process, ``compute(members)``."""
    rows = np.asarray(members, np.int64)
    if jax.process_count() == 1:
        return compute(rows)
    positions = distributed.process_members(len(rows))
    local = rows[positions] if len(positions) else rows[[jax.process_index() % len(rows)]]
    mine = jax.tree.map(lambda a: np.asarray(a)[:len(positions)], compute(local))
    return distributed.gather_members(mine, positions, len(rows))


# ----------------------------------------------------------------------------------------------
# multi-process jobs


def _process_block(plan: ens_lib.TrainingPlan, checkpoint_dir):
    """(this process's plan, its checkpoint folder). In a multi-process job the process trains
    its block of members, repeated up to the largest block so that every process runs the same
    chunks (their checkpoints are saved together), under <checkpoint_dir>/processes-P-chunk-C."""
    if jax.process_count() == 1:
        return plan, checkpoint_dir
    k_total, procs = plan.num_members, jax.process_count()
    if plan.config.devices is None and jax.device_count() != procs * jax.local_device_count():
        raise ValueError("every process of the job must have the same number of devices; pass "
                         "devices= with the same count on each")
    block = distributed.process_members(k_total)
    rows = np.resize(block if len(block) else [jax.process_index() % k_total], -(-k_total // procs))
    chunk = plan.config.members_per_chunk or (1 if jax.default_backend() == "cpu" else len(rows))
    chunk = -(-chunk // len(plan.devices)) * len(plan.devices)
    if checkpoint_dir is not None:
        checkpoint_dir = Path(checkpoint_dir) / f"processes-{procs}-chunk-{chunk}"
    return plan.select(rows, chunk_size=chunk), checkpoint_dir


def _gathered(ens: ens_lib.Ensemble, full: ens_lib.TrainingPlan) -> ens_lib.Ensemble:
    """In a multi-process job, the ensemble of all K members from each process's block."""
    if jax.process_count() == 1:
        return ens
    k_total = full.num_members
    block = distributed.process_members(k_total)
    n = len(block)
    history = {k: np.moveaxis(v, 1, 0)[:n] for k, v in ens.history.items()}
    variables, history = distributed.gather_members(
        (jax.tree.map(lambda a: np.asarray(a)[:n], ens.variables), history), block, k_total)
    return dataclasses.replace(ens, variables=variables, masks=full.masks,
                               member_ids=full.member_ids,
                               history={k: np.moveaxis(v, 0, 1) for k, v in history.items()})


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

