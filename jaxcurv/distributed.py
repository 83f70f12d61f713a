"""Multi-process jobs (one process per host, ``jax.distributed``): which ensemble members this
process computes, and how every process gets the results of all of them.

Work is split over processes by member: in a job of P processes, process p computes the
contiguous block ``process_members(K)`` of the K members (block sizes differ by at most one) on
its local devices. Member keys derive from global member ids, so a member computed by any process
equals the same member computed by a single process, and training needs no communication between
processes. :func:`gather_members` then gives every process the full arrays, ordered by member: it
moves raw bytes (one all-gather of uint8 rows, plus one of a 40-byte header), so float64, bool and
int64 arrays arrive bit for bit whatever ``jax_enable_x64`` says. In a single process every
function here is a no-op or the identity.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Any

import jax
import numpy as np

__all__ = ["initialize", "process_members", "gather_members", "gather_rows", "is_writer",
           "barrier"]

_ADDRESS = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[^:\s\[\]]+):(\d{1,5})$")
_HEADER = 8 + 32  # int64 row count + sha256 of the arrays' structure


def _env_int(name: str) -> int | None:
    """The integer in environment variable ``name``, None when unset or empty."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} must be an integer") from None


def _check_settings(coordinator, num_processes, process_id) -> None:
    """ValueError naming the first bad setting of :func:`initialize`."""
    if coordinator is not None and (not isinstance(coordinator, str)
                                    or not _ADDRESS.match(coordinator)
                                    or not 0 < int(coordinator.rsplit(":", 1)[1]) < 65536):
        raise ValueError(f"coordinator must be 'HOST:PORT' (the address of process 0 and a free "
                         f"port, e.g. 'node0:8476'), got {coordinator!r}")
    for name, value, low in (("num_processes", num_processes, 1), ("process_id", process_id, 0)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < low):
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if num_processes is not None and process_id is not None and process_id >= num_processes:
        raise ValueError(f"process_id must be in [0, num_processes = {num_processes}), "
                         f"got {process_id}")


def _launcher_detected() -> bool:
    """True under a multi-task launch that jax.distributed detects by itself: SLURM (srun with
    more than one task), Open MPI (mpirun) or a multi-host Cloud TPU slice."""
    env = os.environ
    if "SLURM_JOB_ID" in env and "SLURM_PROCID" in env and (_env_int("SLURM_NTASKS") or 1) > 1:
        return True
    if "OMPI_MCA_orte_hnp_uri" in env and (_env_int("OMPI_COMM_WORLD_SIZE") or 1) > 1:
        return True
    return "," in env.get("TPU_WORKER_HOSTNAMES", "")


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
    """Join a multi-process job (``jax.distributed.initialize``); call it before any JAX work.

    Settings not given come from JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID,
    then from the cluster (SLURM, Open MPI, Cloud TPU; jax detects those). Nothing given and no
    launcher, or ``num_processes=1``: a single process, nothing to do. Already initialized: the
    settings must match the running job. On CPU, collectives use gloo.
    """
    _check_settings(coordinator, num_processes, process_id)
    coordinator = coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
    num_processes = num_processes if num_processes is not None else _env_int("JAX_NUM_PROCESSES")
    process_id = process_id if process_id is not None else _env_int("JAX_PROCESS_ID")
    _check_settings(coordinator, num_processes, process_id)
    if jax.distributed.is_initialized():
        if (num_processes not in (None, jax.process_count())
                or process_id not in (None, jax.process_index())):
            raise ValueError(f"this process already runs as process {jax.process_index()} of "
                             f"{jax.process_count()}; num_processes={num_processes} and "
                             f"process_id={process_id} do not match that job")
        return
    if num_processes == 1 or (coordinator is None and num_processes is None
                              and process_id is None and not _launcher_detected()):
        return
    if getattr(jax.config, "jax_cpu_collectives_implementation", "gloo") in (None, "none"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(coordinator, num_processes, process_id)
    except RuntimeError as err:
        if "before" in str(err).lower():
            raise RuntimeError("join the multi-process job before any other JAX work in this "
                               f"process (call initialize first): {err}") from err
        raise


def is_writer() -> bool:
    """True in the process that writes shared outputs (reports, caches): process 0."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process of the job reached ``barrier(name)`` (same name everywhere)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"barrier needs a non-empty name, got {name!r}")
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def process_members(num_members: int) -> np.ndarray:
    """Indices (int64, ascending) of the members this process computes: its contiguous block of
    ``range(num_members)``, block sizes differing by at most one (empty when there are fewer
    members than processes)."""
    if isinstance(num_members, bool) or not isinstance(num_members, (int, np.integer)) \
            or num_members < 1:
        raise ValueError(f"num_members must be a positive integer, got {num_members!r}")
    blocks = np.array_split(np.arange(int(num_members), dtype=np.int64), jax.process_count())
    return blocks[jax.process_index()]


def _host_leaves(tree: Any) -> tuple[list[np.ndarray], Any, int]:
    """(contiguous numpy leaves, treedef, rows): every leaf has the same leading size ``rows``."""
    leaves, treedef = jax.tree.flatten(tree)
    arrays = [np.ascontiguousarray(np.asarray(leaf)) for leaf in leaves]
    rows = {a.shape[0] if a.ndim else None for a in arrays}
    if None in rows or len(rows) > 1:
        raise ValueError("every array must have the same leading (member) axis, got shapes "
                         f"{[a.shape for a in arrays]}")
    if any(a.dtype == object for a in arrays):
        raise ValueError("object arrays cannot be gathered; pass numeric or bool arrays")
    return arrays, treedef, (rows.pop() if rows else 0)


def _signature(arrays: list[np.ndarray], treedef) -> bytes:
    """sha256 of the tree structure, dtypes and per-row shapes: equal on every process or the
    rows cannot be joined."""
    text = repr((str(treedef), [(a.dtype.str, a.shape[1:]) for a in arrays]))
    return hashlib.sha256(text.encode()).digest()


def _allgather(array: np.ndarray) -> np.ndarray:
    """(P, *shape) stack of every process's ``array`` (same shape on all of them)."""
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(array, tiled=False))


def gather_rows(tree: Any) -> Any:
    """Every process's rows, concatenated in process order: each leaf (n_p, ...) becomes
    (Σ n_p, ...) on every process. Row counts may differ between processes; structure, dtypes
    and per-row shapes may not (ValueError on every process). Exact for any dtype (raw bytes)."""
    arrays, treedef, rows = _host_leaves(tree)
    if jax.process_count() == 1 or not arrays:
        return jax.tree.unflatten(treedef, arrays)
    header = np.frombuffer(np.int64(rows).tobytes() + _signature(arrays, treedef), np.uint8)
    headers = _allgather(header)
    counts = headers[:, :8].copy().view(np.int64).ravel()
    if any(bytes(h[8:]) != bytes(headers[0, 8:]) for h in headers):
        raise ValueError("the processes passed arrays of different structure, dtypes or "
                         "per-row shapes; every process must pass the same kind of arrays")
    if not counts.any():
        return jax.tree.unflatten(treedef, arrays)
    widths = [a.dtype.itemsize * int(np.prod(a.shape[1:], dtype=np.int64)) for a in arrays]
    payload = np.zeros((int(counts.max()), max(sum(widths), 1)), np.uint8)
    if rows:
        payload[:rows, :sum(widths)] = np.concatenate(
            [a.reshape(rows, -1).view(np.uint8) if w else np.zeros((rows, 0), np.uint8)
             for a, w in zip(arrays, widths)], axis=1)
    gathered = _allgather(payload)
    joined = np.concatenate([gathered[q, :counts[q]] for q in range(len(counts))])
    offsets = np.cumsum([0, *widths])
    out = [np.ascontiguousarray(joined[:, offsets[i]:offsets[i + 1]]).view(a.dtype)
           .reshape(len(joined), *a.shape[1:]) for i, a in enumerate(arrays)]
    return jax.tree.unflatten(treedef, out)


def gather_members(tree: Any, member_ids, num_members: int) -> Any:
    """Full arrays (num_members, ...) ordered by member index, on every process, from each
    process's rows: leaf rows j hold member ``member_ids[j]`` (a process may hold none). Every
    member must be held by exactly one process (ValueError otherwise)."""
    if isinstance(num_members, bool) or not isinstance(num_members, (int, np.integer)) \
            or num_members < 1:
        raise ValueError(f"num_members must be a positive integer, got {num_members!r}")
    ids = np.asarray(member_ids)
    if ids.size == 0:
        ids = ids.astype(np.int64).reshape(0)
    if (ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer)
            or (ids.size and (ids.min() < 0 or ids.max() >= num_members))):
        raise ValueError(f"member_ids must be member indices in [0, {num_members}), "
                         f"got {member_ids!r}")
    _, _, rows = _host_leaves(tree)
    if jax.tree.leaves(tree) and rows != ids.size:
        raise ValueError(f"the arrays hold {rows} rows but member_ids names {ids.size} members")
    all_ids, joined = gather_rows((ids.astype(np.int64), tree))
    if not np.array_equal(np.sort(all_ids), np.arange(num_members)):
        missing = sorted(set(range(num_members)) - set(all_ids.tolist()))
        raise ValueError(f"every member must be held by exactly one process: missing "
                         f"{missing[:8]}, {len(all_ids) - len(set(all_ids.tolist()))} held twice")
    order = np.argsort(all_ids, kind="stable")
    return jax.tree.map(lambda a: a[order], joined)
