"""Multi-process jobs (jaxcurv.distributed): two processes on 127.0.0.1 give the single-process
results — training, member curvature, zero-order curvature and the audit's scores.csv — and
resume training from checkpoints saved together; argument checks of the helpers."""

from __future__ import annotations

import contextlib
import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxcurv import distributed
from jaxcurv.workflow import AuditConfig

_TIMEOUT_S = 480  # a safety net: the job takes ~20 s of CPU per process
_AUDIT = dict(models=6, epochs=1, num_probes=2, zero_order=False, max_examples=200, bootstrap=0)


# ----------------------------------------------------------------------------------------------
# the job: run by each process of the two-process job, and in this process as the reference


def _job(out: Path, *, num_processes: int = 1, process_id: int = 0, port: int | None = None,
         interrupt: bool = False) -> dict[str, np.ndarray]:
    """The audit, then 3 members of a tiny MLP (optionally killed after the first epoch and
    resumed), member curvature, zero-order curvature and a float64/bool/int64 gather; returns
    the arrays to compare (also written to out/result-<process>.npz)."""
    import jax

    from jaxcurv import data, ensemble, models
    from jaxcurv.workflow import members_across_processes, run_audit, train_ensemble

    multi = {} if num_processes == 1 else dict(coordinator=f"127.0.0.1:{port}",
                                               num_processes=num_processes, process_id=process_id)
    run_audit(AuditConfig(**_AUDIT, out=str(out / "audit"), **multi))  # joins the job first
    ds = data.load("digits").take(np.arange(120))
    masks = data.subset_masks(len(ds), 3, seed=0)
    model = models.get_model("mlp", ds.num_classes, hidden=16, depth=1)
    key = jax.random.PRNGKey(3)
    # one member per chunk in both layouts: vmapped chunks of different sizes (3 members here,
    # 1–2 per process there) agree only to the last bits, which the float32 zero-order finite
    # differences below amplify far beyond the comparison's tolerance
    settings = dict(epochs=2, batch_size=16, optimizer="sgd", learning_rate=0.1,
                    checkpoint_dir=out / "checkpoints", members_per_chunk=1)
    if interrupt:
        with contextlib.suppress(_Stopped):  # killed after the first epoch's checkpoint
            train_ensemble(model, ds, masks, key, callbacks=[_stop], **settings)
    trained = []
    ens = train_ensemble(model, ds, masks, key, **settings,
                         callbacks=[lambda epoch, info: trained.append(epoch)])
    x, y = ds.images[:40], ds.labels[:40]
    curvature_fn = ensemble.make_member_curvature(ens.model, num_probes=2)
    zero_fn = ensemble.make_member_zero_order_curvature(ens.model, num_probes=2)
    # each process computes its block of the members, every process gets all rows
    curv = members_across_processes(lambda rows: curvature_fn(ens, x, y, key, members=rows),
                                    [2, 0, 1])
    one = members_across_processes(lambda rows: curvature_fn(ens, x, y, key, members=rows), [1])
    zero = members_across_processes(lambda rows: zero_fn(ens, x, y, key, members=rows), [0, 2])
    block = distributed.process_members(3)
    values = {"f64": np.arange(3) / 3.0, "bool": np.arange(3) % 2 == 0,
              "i64": np.arange(3, dtype=np.int64) * 2**40}
    gathered = distributed.gather_members({k: v[block] for k, v in values.items()}, block, 3)
    result = {**{f"param{i}": np.asarray(a) for i, a in enumerate(jax.tree.leaves(ens.variables))},
              "train_loss": ens.history["train_loss"], "member_ids": ens.member_ids,
              "masks": ens.masks, "trace": curv.trace, "trace_sq": curv.trace_sq,
              "one": one.trace_sq, "zero": zero, "epochs_trained": np.asarray(trained),
              **{f"gathered_{k}": v for k, v in gathered.items()}}
    np.savez(out / f"result-{process_id}.npz", **result)
    return result


class _Stopped(Exception):
    """Raised by :func:`_stop` to interrupt training as a kill would."""


def _stop(epoch, info):
    """A kill after the first epoch's checkpoint, in every process."""
    raise _Stopped


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(out: Path, num_processes: int, devices: int) -> list[subprocess.Popen]:
    """Start the processes of the job, ``devices`` fake CPU devices each."""
    port = _free_port()
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               JAX_PLATFORMS="cpu")
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            "from pathlib import Path; import test_distributed as t; "
            "t._job(Path(sys.argv[1]), num_processes=int(sys.argv[2]), "
            "process_id=int(sys.argv[3]), port=int(sys.argv[4]), interrupt=True)")
    return [subprocess.Popen([sys.executable, "-c", code, str(out), str(num_processes), str(p),
                              str(port)], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
            for p in range(num_processes)]


def _wait(procs: list[subprocess.Popen]) -> None:
    """Wait for every process (killing all of them after _TIMEOUT_S); fail on a nonzero exit."""
    errors = []
    for p in procs:
        try:
            _, err = p.communicate(timeout=_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            _, err = p.communicate()
        if p.returncode != 0:
            errors.append(err[-3000:])
    assert not errors, "\n----\n".join(errors)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(two-process job's folder, single-process folder, reference arrays): the job runs in two
    subprocesses (2 and 1 fake CPU devices) while the reference runs here."""
    two, one = tmp_path_factory.mktemp("two"), tmp_path_factory.mktemp("one")
    procs = _launch(two, 2, devices=1)
    try:
        reference = _job(one)
    finally:
        _wait(procs)
    return two, one, reference


def _scores(path: Path) -> dict[str, np.ndarray]:
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}


# ----------------------------------------------------------------------------------------------
# two processes = one process


def test_two_processes_train_and_curvature_like_one(runs):
    two, _, ref = runs
    results = [dict(np.load(two / f"result-{p}.npz")) for p in range(2)]
    for name, value in ref.items():
        if name == "epochs_trained":
            continue
        for res in results:  # every process holds the full arrays
            assert res[name].shape == value.shape and res[name].dtype == value.dtype, name
            np.testing.assert_allclose(res[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
    np.testing.assert_array_equal(results[0]["member_ids"], [0, 1, 2])
    for name in ("gathered_f64", "gathered_bool", "gathered_i64"):  # bit for bit, float64 too
        np.testing.assert_array_equal(results[1][name], ref[name])
    assert ref["gathered_f64"].dtype == np.float64
    # each process resumed from the checkpoint of epoch 1 (chunk 0) saved by the interrupted run:
    # chunk 0 trains epoch index 1 only, chunk 1 both epochs
    for res in results:
        np.testing.assert_array_equal(res["epochs_trained"], [1, 0, 1])
    import jax  # the reference ran here: one chunk per group of local devices

    chunks = -(-3 // jax.local_device_count())
    np.testing.assert_array_equal(ref["epochs_trained"], [0, 1] * chunks)
    folders = sorted(p.name for p in (two / "checkpoints").iterdir())
    assert folders == ["processes-2-chunk-1"]


def test_two_process_audit_scores_equal_one_process(runs):
    two, one, _ = runs
    s2, s1 = _scores(two / "audit" / "scores.csv"), _scores(one / "audit" / "scores.csv")
    assert list(s2) == list(s1) and len(s1["index"]) == 200
    for name in s1:
        np.testing.assert_allclose(s2[name], s1[name], rtol=1e-4, atol=1e-5, err_msg=name)
    assert (two / "audit" / "summary.json").is_file() and (two / "audit" / "report.html").is_file()


def test_processes_other_than_0_read_the_stage_cache_and_write_nothing(tmp_path):
    from jaxcurv.workflow.audit import _ReadOnlyCache
    from jaxcurv.workflow.cache import StageCache

    calls = []

    def compute():
        calls.append(1)
        return {"a": np.arange(3.0)}

    reader = _ReadOnlyCache(tmp_path)
    np.testing.assert_array_equal(reader.run("stage", {"k": 1}, compute)["a"], np.arange(3.0))
    assert calls == [1] and not list(tmp_path.iterdir())  # computed, nothing written
    StageCache(tmp_path).run("stage", {"k": 1}, compute)  # process 0 writes the entry ...
    np.testing.assert_array_equal(reader.run("stage", {"k": 1}, compute)["a"], np.arange(3.0))
    assert calls == [1, 1]  # ... which the others read instead of computing


# ----------------------------------------------------------------------------------------------
# one process: the helpers are the identity; argument checks


def test_single_process_helpers_are_the_identity(monkeypatch):
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID",
                 "SLURM_JOB_ID", "OMPI_MCA_orte_hnp_uri", "TPU_WORKER_HOSTNAMES"):
        monkeypatch.delenv(name, raising=False)
    distributed.initialize()  # nothing given, no launcher: one process, nothing to do
    distributed.initialize(num_processes=1)
    assert distributed.is_writer()
    distributed.barrier("single")
    np.testing.assert_array_equal(distributed.process_members(5), np.arange(5))
    tree = {"a": np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]), "b": np.array([True, False, True])}
    out = distributed.gather_members(tree, [2, 0, 1], 3)
    np.testing.assert_array_equal(out["a"], tree["a"][[1, 2, 0]])
    np.testing.assert_array_equal(out["b"], tree["b"][[1, 2, 0]])
    rows = distributed.gather_rows(tree)
    np.testing.assert_array_equal(rows["a"], tree["a"])


@pytest.mark.parametrize("call, message", [
    (lambda: distributed.initialize("node0"), "HOST:PORT"),
    (lambda: distributed.initialize("node0:0"), "HOST:PORT"),
    (lambda: distributed.initialize("node0:70000"), "HOST:PORT"),
    (lambda: distributed.initialize(num_processes=0), "num_processes"),
    (lambda: distributed.initialize(process_id=-1), "process_id"),
    (lambda: distributed.initialize("node0:1234", 2, 2), "process_id must be in"),
    (lambda: distributed.process_members(0), "num_members"),
    (lambda: distributed.process_members(2.0), "num_members"),
    (lambda: distributed.gather_members({"a": np.zeros((2, 1))}, [0, 1], 3), "exactly one"),
    (lambda: distributed.gather_members({"a": np.zeros((2, 1))}, [0], 3), "rows"),
    (lambda: distributed.gather_members({"a": np.zeros((2, 1))}, [0, 5], 3), "member_ids"),
    (lambda: distributed.gather_rows({"a": np.zeros((2, 1)), "b": np.zeros(3)}), "leading"),
    (lambda: distributed.barrier(""), "name"),
])
def test_helpers_reject_bad_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_environment_settings_are_checked(monkeypatch):
    monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES"):
        distributed.initialize()


@pytest.mark.parametrize("fields, message", [
    ({"coordinator": "node0"}, "--coordinator"),
    ({"coordinator": "node0:http"}, "--coordinator"),
    ({"num_processes": 0}, "--num-processes"),
    ({"process_id": -1}, "--process-id"),
    ({"num_processes": 2, "process_id": 2}, "--process-id must be in"),
])
def test_audit_config_checks_process_settings(fields, message):
    with pytest.raises(ValueError, match=message):
        AuditConfig(**fields).validate()
    AuditConfig(coordinator="node0:8476", num_processes=2, process_id=1).validate()
