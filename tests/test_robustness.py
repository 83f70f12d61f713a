"""Nothing silently wrong: content-keyed caches, verified checkpoints, early divergence, one run per
output folder, one-line errors for damaged inputs. Each test reproduces a way to get a wrong result
(or a traceback) and checks the new behaviour against a fresh, independent computation."""

import gc
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcurv import curvature, data, ensemble, models
from jaxcurv._checkpoints import fingerprint as checkpoint_fingerprint
from jaxcurv._tree import stack
from jaxcurv.workflow import StageCache, fingerprint, train_ensemble
from jaxcurv.workflow.training import clean_checkpoints
from jaxcurv.workflow.lock import OutputLocked, exclusive_lock

KEY = jax.random.PRNGKey(0)
LOCK_MODULE = Path(__file__).resolve().parents[1] / "jaxcurv" / "workflow" / "lock.py"


@pytest.fixture(scope="module")
def small():
    full = data.load("digits")
    return full.take(np.random.default_rng(3).choice(len(full), 96, replace=False))


@pytest.fixture(scope="module")
def mlp():
    return models.get_model("mlp", 10, hidden=16, depth=1)


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message, message
    return message


# --- caches and checkpoints are keyed on the content of the data -------------------------------


def _mirror_npz(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    np.savez(path, images=images, labels=labels)


def test_same_path_changed_content_recomputes_and_equals_a_fresh_run(tmp_path):
    """The finding: data.npz overwritten with mirrored images (same labels, same pixel sum) reused
    every cached stage. Keys on the loaded content recompute and equal a fresh cache."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 4, 4, 1), dtype=np.uint8)
    labels = rng.integers(0, 3, 12)
    path = tmp_path / "data.npz"

    def stage(ds):  # a stand-in for a costly stage: depends on every pixel
        return {"score": ds.images.reshape(len(ds), -1) @ np.arange(16, dtype=np.float32)}

    def run(cache_dir):
        ds = data.load(f"npz:{path}")
        cache = StageCache(cache_dir)
        return cache.run("score", {"data": fingerprint(ds.images, ds.labels)}, lambda: stage(ds))

    _mirror_npz(path, images, labels)
    old = run(tmp_path / "cache")
    mirrored = images[:, :, ::-1]
    assert mirrored.sum() == images.sum()  # what the old checkpoint key hashed
    _mirror_npz(path, mirrored, labels)
    again = run(tmp_path / "cache")
    fresh = run(tmp_path / "fresh")
    np.testing.assert_array_equal(again["score"], fresh["score"])
    assert not np.array_equal(again["score"], old["score"])
    perm = rng.permutation(12)  # reordered rows: recomputed too
    _mirror_npz(path, mirrored[perm], labels[perm])
    np.testing.assert_array_equal(run(tmp_path / "cache")["score"], run(tmp_path / "f2")["score"])
    np.testing.assert_array_equal(run(tmp_path / "f2")["score"], fresh["score"][perm])


def test_checkpoint_fingerprint_hashes_every_pixel(small, mlp):
    masks = data.subset_masks(len(small), 2, seed=0)
    mirrored = data.Dataset(np.ascontiguousarray(small.images[:, :, ::-1]), small.labels,
                            small.num_classes, small.name)
    assert np.float64(mirrored.images.sum(dtype=np.float64)) == small.images.sum(dtype=np.float64)
    args = (masks, np.arange(2), 1, {"epochs": 1})
    assert checkpoint_fingerprint(mlp, small, *args) == checkpoint_fingerprint(mlp, small, *args)
    assert checkpoint_fingerprint(mlp, mirrored, *args) != checkpoint_fingerprint(mlp, small, *args)


def _largest_file(folder: Path) -> Path:
    return max((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def test_damaged_checkpoints_are_discarded_and_the_result_equals_a_fresh_run(small, mlp,
                                                                              tmp_path,
                                                                              monkeypatch):
    masks = data.subset_masks(len(small), 3, seed=1)
    kw = dict(epochs=2, batch_size=32, members_per_chunk=1, record_examples=True)
    fresh = ensemble.train(mlp, small, masks, KEY, **kw)
    train_ensemble(mlp, small, masks, KEY, checkpoint_dir=tmp_path, **kw)
    # chunk 0: three flipped bits in its parameters (orbax would restore them silently); chunk 1:
    # a truncated array file (tensorstore OUT_OF_RANGE); chunk 2: killed before its checksum was
    # written; run.json truncated
    target = _largest_file(tmp_path / "chunk_0000" / "2" / "state")
    raw = bytearray(target.read_bytes())
    for i in (len(raw) // 3, len(raw) // 2, 2 * len(raw) // 3):
        raw[i] ^= 1 << (i % 8)
    target.write_bytes(bytes(raw))
    target = _largest_file(tmp_path / "chunk_0001" / "2" / "state")
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    (tmp_path / "chunk_0002" / "2" / "checksum.json").unlink()
    (tmp_path / "run.json").write_text('{"finger')
    seen, unraisable = [], []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = train_ensemble(mlp, small, masks, KEY, checkpoint_dir=tmp_path,
                                 callbacks=[lambda e, i: seen.append((i["chunk"], e))], **kw)
        gc.collect()
    assert not unraisable  # orbax never read a damaged file: no stray tracebacks on stderr
    notices = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert sum("failed verification" in n for n in notices) == 3, notices
    assert any("run.json" in n and "unreadable" in n for n in notices), notices
    assert all("\n" not in n for n in notices)
    assert all("resuming from epoch 1" in n for n in notices if "failed" in n)
    assert seen == [(0, 1), (1, 1), (2, 1)]  # each chunk retrained its last epoch only
    for a, b in zip(jax.tree.leaves(resumed.variables), jax.tree.leaves(fresh.variables)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for name, values in fresh.history.items():
        np.testing.assert_array_equal(resumed.history[name], values)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rewritten checkpoints verify cleanly
        again = train_ensemble(mlp, small, masks, KEY, checkpoint_dir=tmp_path, **kw)
    np.testing.assert_array_equal(again.history["train_loss"], fresh.history["train_loss"])


def test_clean_checkpoints_removes_only_other_checkpoint_folders(tmp_path):
    for name in ("in-use", "old-a", "old-b"):
        (tmp_path / name / "chunk_0000").mkdir(parents=True)
        (tmp_path / name / "run.json").write_text("{}")
    (tmp_path / "notes").mkdir()  # not a checkpoint folder: left alone
    (tmp_path / "file.txt").write_text("x")
    removed = clean_checkpoints(tmp_path, ["in-use"])
    assert sorted(p.name for p in removed) == ["old-a", "old-b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "in-use", "notes"]
    assert clean_checkpoints(tmp_path / "missing", []) == []
    with pytest.raises(ValueError, match="folder names"):
        clean_checkpoints(tmp_path, ["a/b"])


# --- divergence is found at the epoch it happens -----------------------------------------------


def test_learning_rate_1e4_stops_after_the_first_epoch(small, mlp, tmp_path):
    masks = data.subset_masks(len(small), 2, seed=2)
    seen = []
    with pytest.raises(ensemble.TrainingDiverged) as err:
        train_ensemble(mlp, small, masks, KEY, epochs=3, batch_size=32, learning_rate=1e4,
                       checkpoint_dir=tmp_path, callbacks=[lambda e, i: seen.append(e)])
    assert _one_line(err) == "training diverged at epoch 1 (member 0): lower --learning-rate"
    assert isinstance(err.value, ValueError) and seen == []
    assert not list((tmp_path / "chunk_0000").glob("[0-9]*"))  # the diverged epoch is not saved


def test_non_finite_parameters_name_the_member(small, mlp):
    """Member 1 starts from NaN weights (its loss is NaN from the first step): it is named."""
    calls = []

    def poison_second(variables):
        calls.append(1)
        return jax.tree.map(lambda a: a * np.nan, variables) if len(calls) == 2 else variables

    masks = data.subset_masks(len(small), 2, seed=2)
    with pytest.raises(ensemble.TrainingDiverged, match=r"epoch 1 \(member 1\)"):
        ensemble.train(mlp, small, masks, KEY, epochs=2, batch_size=32, members_per_chunk=2,
                       init_transform=poison_second)


def test_test_images_of_another_shape_fail_before_training(small, mlp):
    other = data.Dataset(np.zeros((4, 4, 4, 1), np.float32), np.zeros(4, np.int32), 10, "x")
    masks = data.subset_masks(len(small), 2, seed=0)
    with pytest.raises(ValueError, match=r"test images have shape \(4, 4, 1\) but training"):
        train_ensemble(mlp, small, masks, KEY, epochs=1, test=other, callbacks=[pytest.fail])


# --- one run per output folder -------------------------------------------------------------------


def _holder(out: Path) -> subprocess.Popen:
    """A process that takes the lock of ``out``, prints 'locked' and holds it until stdin ends."""
    script = textwrap.dedent(f"""
        import importlib.util, sys
        spec = importlib.util.spec_from_file_location("lock", {str(LOCK_MODULE)!r})
        lock = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(lock)
        with lock.exclusive_lock({str(out)!r}):
            print("locked", flush=True)
            sys.stdin.readline()
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_lock_holder_is_refused_naming_the_pid(tmp_path):
    proc = _holder(tmp_path)
    try:
        with pytest.raises(OutputLocked) as err:
            with exclusive_lock(tmp_path):
                pytest.fail("two holders")
        assert f"pid {proc.pid}" in _one_line(err) and str(tmp_path) in str(err.value)
    finally:
        proc.communicate("\n", timeout=60)
    with exclusive_lock(tmp_path) as path:  # released when the holder exits
        assert path == tmp_path / ".lock"
    killed = _holder(tmp_path)
    killed.kill()  # a killed holder leaves no stale lock
    killed.wait(timeout=60)
    with exclusive_lock(tmp_path):
        pass


def test_lock_is_released_on_errors_and_interrupts(tmp_path):
    for exc in (RuntimeError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(exc)):
            with exclusive_lock(tmp_path):
                with pytest.raises(OutputLocked, match=r"pid \d+"):  # a second open is refused
                    with exclusive_lock(tmp_path):
                        pass
                raise exc
    with exclusive_lock(tmp_path):
        pass
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        with exclusive_lock(tmp_path / "file"):
            pass


# --- damaged npz files: one line naming the file, never a pickle hint ---------------------------


def _npz_bytes(tmp_path: Path) -> bytes:
    good = tmp_path / "good.npz"
    np.savez(good, images=np.zeros((3, 4, 4, 1), np.uint8), labels=np.arange(3))
    return good.read_bytes()


@pytest.mark.parametrize("damage", ["truncated", "empty", "random", "npy", "crc", "object"])
def test_damaged_npz_gives_one_line_naming_the_file(tmp_path, damage):
    raw = _npz_bytes(tmp_path)
    path = tmp_path / "bad.npz"
    if damage == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "random":
        path.write_bytes(np.random.default_rng(0).bytes(500))
    elif damage == "npy":
        with open(path, "wb") as f:
            np.save(f, np.zeros(3))
    elif damage == "crc":
        flipped = bytearray(raw)
        flipped[200] ^= 0xFF  # inside the images array: the zip CRC no longer matches
        path.write_bytes(bytes(flipped))
    else:
        np.savez(path, images=np.zeros((3, 4, 4, 1)), labels=np.array([1, "a", None], object))
    with pytest.raises(ValueError) as err:
        data.load(f"npz:{path}")
    message = _one_line(err)
    assert str(path) in message and "pickle" not in message.lower()
    assert "allow_pickle" not in message


def test_npz_with_other_keys_names_them(tmp_path):
    path = tmp_path / "keys.npz"
    np.savez(path, x=np.zeros((2, 3, 3)), y=np.zeros(2))
    with pytest.raises(ValueError) as err:
        data.load(f"npz:{path}")
    message = _one_line(err)
    assert "['x', 'y']" in message and "'images' + 'labels'" in message and str(path) in message


def test_npz_test_images_of_another_shape(tmp_path):
    path = tmp_path / "split.npz"
    np.savez(path, train_images=np.zeros((4, 8, 8, 1), np.uint8), train_labels=[0, 1, 0, 1],
             test_images=np.zeros((2, 6, 6, 1), np.uint8), test_labels=[0, 1])
    for call in (lambda: data.train_test(f"npz:{path}"),
                 lambda: data.load(f"npz:{path}", split="all")):
        with pytest.raises(ValueError, match=r"test images have shape \(6, 6, 1\) but training "
                                             r"images \(8, 8, 1\)"):
            call()


# --- curvature API: labels and loss shape at the boundary ---------------------------------------


def _linear_problem():
    w = jax.random.normal(jax.random.PRNGKey(1), (4, 3))
    x = jax.random.uniform(jax.random.PRNGKey(2), (5, 4))
    loss = lambda p, xi, yi: optax.softmax_cross_entropy_with_integer_labels(xi @ p, yi)
    return loss, w, x


@pytest.mark.parametrize("fn", [curvature.input_curvature, curvature.zero_order_curvature,
                                curvature.reference_score])
def test_labels_out_of_range_are_refused(fn):
    loss, w, x = _linear_problem()
    with pytest.raises(ValueError, match=r"\[0, num_classes=3\); got range \[0, 7\]"):
        fn(loss, w, x, np.array([0, 1, 7, 1, 0]), KEY, num_probes=2, num_classes=3)
    with pytest.raises(ValueError, match=r"got range \[-1, 2\]"):  # negative: always refused
        fn(loss, w, x, np.array([0, -1, 2, 1, 0]), KEY, num_probes=2)
    fn(loss, w, x, np.array([0, 1, 2, 1, 0]), KEY, num_probes=2, num_classes=3)


def test_ensemble_curvature_checks_labels_against_the_model_output(small, mlp):
    variables = stack([models.init_variables(mlp, jax.random.PRNGKey(k), small.images.shape[1:])
                       for k in range(2)])
    ens = ensemble.Ensemble(mlp, jax.tree.map(np.asarray, variables),
                            np.ones((2, len(small)), bool), np.arange(2), {}, {})
    labels = small.labels.copy()
    labels[3] = 10  # the model has 10 outputs
    with pytest.raises(ValueError, match="num_classes=10"):
        ensemble.member_curvature(ens, small.images[:8], labels[:8], KEY, num_probes=2)
    with pytest.raises(ValueError, match="num_classes=10"):
        ensemble.member_zero_order_curvature(ens, small.images[:8], labels[:8], KEY,
                                             num_probes=2)


def test_vector_loss_is_refused_with_the_contract():
    _, w, x = _linear_problem()
    y = np.array([0, 1, 2, 1, 0])
    with pytest.raises(ValueError, match="scalar loss of ONE example, got shape \\(3,\\)"):
        curvature.input_curvature(lambda p, xi, yi: xi @ p, w, x, y, KEY, num_probes=2)
    with pytest.raises(ValueError, match="scalar loss of ONE example"):
        curvature.make_zero_order_curvature(lambda p, xi, yi: xi @ p, num_probes=2)(w, x, y, KEY)


def test_nan_loss_warns_once_per_held_function():
    loss, w, x = _linear_problem()
    y = np.array([0, 1, 2, 1, 0])
    nan_for_label_1 = lambda p, xi, yi: jnp.where(yi == 1, jnp.nan, loss(p, xi, yi))
    fn = curvature.make_input_curvature(nan_for_label_1, num_probes=2)
    with pytest.warns(RuntimeWarning, match=r"loss_fn returned NaN for 2 example\(s\)"):
        fn(w, x, y, KEY)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fn(w, x, y, KEY)  # once per held function
        curvature.make_input_curvature(loss, num_probes=2)(w, x, y, KEY)  # finite: silent
    bad_params = w.at[0, 0].set(jnp.nan)
    with pytest.warns(RuntimeWarning, match=r"NaN for 5 example\(s\)"):
        curvature.zero_order_curvature(loss, bad_params, x, y, KEY, num_probes=2)


def test_out_of_range_label_gives_nan_with_or_without_num_classes_refused():
    """Without num_classes a label ≥ C makes optax's loss NaN: every output of that example is
    NaN (before, its tr(H²) was the finite curvature of the log-sum-exp alone); with num_classes
    the label is refused before any compute."""
    loss, w, x = _linear_problem()
    y = np.array([0, 1, 7, 1, 0])
    with pytest.warns(RuntimeWarning, match=r"loss_fn returned NaN for 1 example\(s\)"):
        c = curvature.input_curvature(loss, w, x, y, KEY, num_probes=3)
    for field in c:
        assert np.isnan(field[2]) and np.isfinite(np.delete(field, 2)).all()
    clean = curvature.input_curvature(loss, w, x, np.array([0, 1, 2, 1, 0]), KEY, num_probes=3)
    np.testing.assert_allclose(np.delete(c.trace_sq, 2), np.delete(clean.trace_sq, 2), rtol=1e-6)
    with pytest.warns(RuntimeWarning):
        z = curvature.zero_order_curvature(loss, w, x, y, KEY, num_probes=3)
    assert np.isnan(z[2]) and np.isfinite(np.delete(z, 2)).all()
    with pytest.raises(ValueError, match="num_classes=3"):
        curvature.input_curvature(loss, w, x, y, KEY, num_probes=3, num_classes=3)


def _mlp_problem(small, mlp):
    variables = models.init_variables(mlp, jax.random.PRNGKey(0), small.images.shape[1:])
    return models.make_loss_fn(mlp), variables, small.images[:6], small.labels[:6]


def test_a_batched_loss_fn_gets_the_contract_not_a_shape_error(small, mlp):
    _, variables, x, y = _mlp_problem(small, mlp)

    def batched(params, xb, yb):  # the mean loss of a batch (N, H, W, C): the wrong contract
        logits = mlp.apply(params, xb.reshape(xb.shape[0], -1), train=False)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    with pytest.raises(ValueError, match="ONE unbatched example") as err:
        curvature.input_curvature(batched, variables, x, y, KEY, num_probes=2)
    assert "x of shape (8, 8, 1)" in _one_line(err) and "x[None]" in str(err.value)


def test_variables_of_another_model_get_the_contract(small, mlp):
    loss, _, x, y = _mlp_problem(small, mlp)
    other = models.init_variables(models.get_model("mlp", 10, hidden=32, depth=1),
                                  jax.random.PRNGKey(0), small.images.shape[1:])
    with pytest.raises(ValueError, match="the variables its model was built with") as err:
        curvature.input_curvature(loss, other, x, y, KEY, num_probes=2)
    _one_line(err)


def test_labels_shaped_n_by_1_name_y(small, mlp):
    loss, variables, x, y = _mlp_problem(small, mlp)
    with pytest.raises(ValueError, match=r"y has shape \(N, 1\).*y.reshape\(-1\)") as err:
        curvature.input_curvature(loss, variables, x, y[:, None], KEY, num_probes=2)
    _one_line(err)
    with pytest.raises(ValueError, match="labels y of shape \\(N,\\)"):
        curvature.input_curvature(loss, variables, x, y[:, None], KEY, num_probes=2,
                                  num_classes=10)


@pytest.mark.parametrize("key", [0, np.int64(3), jnp.zeros(3), jax.random.split(KEY, 4)])
def test_a_non_key_is_refused_naming_the_contract(key):
    loss, w, x = _linear_problem()
    y = np.array([0, 1, 2, 1, 0])
    with pytest.raises(ValueError, match=r"key must be one JAX PRNG key, e.g. jax.random.key\(0\)"):
        curvature.input_curvature(loss, w, x, y, key, num_probes=2)
    for good in (KEY, jax.random.key(0)):
        curvature.input_curvature(loss, w, x, y, good, num_probes=2)


def test_the_loss_fn_check_traces_once_per_signature():
    loss, w, x = _linear_problem()
    y = np.array([0, 1, 2, 1, 0])
    traced = []
    counting = lambda p, xi, yi: traced.append(xi.shape) or loss(p, xi, yi)
    fn = curvature.make_input_curvature(counting, num_probes=2)
    fn(w, x, y, KEY)
    first = len(traced)
    fn(w, x + 0.1, y, KEY)  # same shapes: neither the check nor the kernel traces again
    assert len(traced) == first
