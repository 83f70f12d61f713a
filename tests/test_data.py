"""jaxcurv.data against independent ground truth: scikit-learn digits, Pillow decodes, the official
CIFAR pickle format, naive numpy crops, exact counts and chi-square / binomial tests."""

import io
import os
import pickle
import socket
import sys
import tarfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from scipy import stats

from jaxcurv import data
from jaxcurv.data import (
    Dataset,
    add_label_noise,
    augment,
    augment_batch,
    channel_stats,
    load,
    locate,
    normalize,
    random_crop,
    random_flip,
    subset_masks,
    train_test,
)
from jaxcurv.data import npz as npz_source
from jaxcurv.data.digits import split_indices as digits_split_indices

# The real JPEG-coded CIFAR-10 file, when the environment names a folder that holds it.
REAL_CIFAR = Path(os.environ.get("JAXCURV_DATA_DIR") or "/nonexistent") / "cifar10-jpeg.npz"


def _chi2_pvalue(counts, probs):
    counts = np.asarray(counts, float)
    expected = np.asarray(probs, float) / np.sum(probs) * counts.sum()
    return stats.chisquare(counts, expected).pvalue


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a socket or to download/prepare a TFDS dataset fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    tfds = sys.modules.get("tensorflow_datasets")
    if tfds is not None:
        monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", refuse)


@pytest.fixture(autouse=True)
def no_data_dir_env(monkeypatch):
    """Tests see only the files they make: JAXCURV_DATA_DIR is unset unless a test sets it."""
    monkeypatch.delenv("JAXCURV_DATA_DIR", raising=False)


@pytest.fixture
def cache(monkeypatch, tmp_path):
    path = tmp_path / "cache"
    monkeypatch.setenv("JAXCURV_CACHE_DIR", str(path))
    return path


# --- package -----------------------------------------------------------------------------------


def test_public_names_are_importable_from_the_package():
    names = ["Dataset", "load", "train_test", "locate", "subset_masks", "add_label_noise",
             "random_crop", "random_flip", "augment", "augment_batch", "channel_stats",
             "normalize", "cache_dir", "DIGITS_TEST_FRACTION", "DIGITS_SPLIT_SEED", "PAD_MODES"]
    assert set(names) <= set(data.__all__)
    for name in data.__all__:
        assert getattr(data, name) is not None, name
    assert callable(data.augment) and callable(data.load)  # functions, not same-named modules


# --- Dataset ----------------------------------------------------------------------------------


def test_dataset_validates_and_is_read_only():
    imgs = np.zeros((3, 4, 4, 1), np.float32)
    labs = np.array([0, 1, 2], np.int32)
    ds = Dataset(imgs, labs, 3, "x", ("a", "b", "c"))
    assert len(ds) == 3 and ds.image_shape == (4, 4, 1)
    with pytest.raises(ValueError, match="read-only"):
        ds.images[0, 0, 0, 0] = 1.0
    imgs[0, 0, 0, 0] = 0.5  # the caller's own array stays writable
    sub = ds.take(np.array([2, 0]))
    np.testing.assert_array_equal(sub.labels, [2, 0])
    assert sub.class_names == ("a", "b", "c")
    bad = [
        (dict(images=imgs[0]), "shape"),
        (dict(images=imgs.astype(np.float64)), "float32"),
        (dict(images=imgs + 2.0), r"\[0, 1\]"),
        (dict(images=np.full_like(imgs, np.nan)), "finite"),
        (dict(labels=labs.astype(np.int64)), "int32"),
        (dict(labels=labs[:2]), "same leading size"),
        (dict(labels=np.array([0, 1, 3], np.int32)), "num_classes"),
        (dict(class_names=("a", "b")), "one name per class"),
        (dict(num_classes=0), "num_classes"),
    ]
    base = dict(images=imgs, labels=labs, num_classes=3, name="x", class_names=None)
    for change, msg in bad:
        with pytest.raises(ValueError, match=msg):
            Dataset(**{**base, **change})


def test_from_arrays_converts_uint8_hw_and_float():
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, (5, 6, 7), dtype=np.uint8)
    ds = Dataset.from_arrays(u8, np.array([0, 1, 1, 0, 3]))
    assert ds.images.shape == (5, 6, 7, 1) and ds.images.dtype == np.float32
    np.testing.assert_array_equal(ds.images[..., 0], u8.astype(np.float32) / np.float32(255))
    assert ds.num_classes == 4 and ds.labels.dtype == np.int32
    f64 = rng.random((2, 3, 3, 3))
    ds = Dataset.from_arrays(f64, [0, 1], class_names=["u", "v", "w"])
    assert ds.num_classes == 3 and ds.images.dtype == np.float32
    np.testing.assert_allclose(ds.images, f64, rtol=1e-7)
    with pytest.raises(ValueError, match=r"divide them by 255"):
        Dataset.from_arrays(f64 * 255, [0, 1])
    with pytest.raises(ValueError, match="uint8"):
        Dataset.from_arrays(np.zeros((2, 3, 3), np.int64), [0, 1])
    with pytest.raises(ValueError, match="integers"):
        Dataset.from_arrays(f64, [0.0, 1.0])


# --- digits -----------------------------------------------------------------------------------


def test_digits_matches_sklearn_with_stratified_disjoint_split():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    train, test = train_test("digits")
    assert (len(train), len(test)) == (1438, 359)
    for ds in (train, test):
        assert ds.images.shape[1:] == (8, 8, 1) and ds.images.dtype == np.float32
        assert ds.labels.dtype == np.int32 and ds.num_classes == 10 and ds.name == "digits"
        assert ds.images.min() >= 0.0 and ds.images.max() == 1.0
    _, _, train_idx, test_idx = digits_split_indices()
    assert np.intersect1d(train_idx, test_idx).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train_idx, test_idx])), np.arange(1797))
    expected = (bunch.images[train_idx] / 16).astype(np.float32)
    np.testing.assert_array_equal(train.images[..., 0], expected)
    np.testing.assert_array_equal(test.labels, bunch.target[test_idx])
    # stratified: per class exactly round(0.2 * n_c) test images
    n_c = np.bincount(bunch.target)
    np.testing.assert_array_equal(np.bincount(test.labels), np.round(0.2 * n_c).astype(int))
    # deterministic; "all" = train then test
    again = load("digits", split="train")
    np.testing.assert_array_equal(again.images, train.images)
    everything = load("digits", split="all")
    np.testing.assert_array_equal(everything.labels, np.concatenate([train.labels, test.labels]))


# --- npz --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["float_hw", "uint8_hwc"])
def test_npz_single_layout(tmp_path, kind):
    rng = np.random.default_rng(1)
    if kind == "float_hw":
        images = rng.random((6, 5, 4)).astype(np.float64)
        expected = images[..., None].astype(np.float32)
    else:
        images = rng.integers(0, 256, (6, 5, 4, 3), dtype=np.uint8)
        expected = images.astype(np.float32) / np.float32(255)
    labels = np.array([0, 2, 1, 2, 0, 1], np.int64)
    path = tmp_path / "d.npz"
    np.savez(path, images=images, labels=labels)
    ds = load(f"npz:{path}")
    np.testing.assert_array_equal(ds.images, expected)
    np.testing.assert_array_equal(ds.labels, labels)
    assert ds.num_classes == 3 and ds.name == f"npz:{path}" and ds.class_names is None
    np.testing.assert_array_equal(load(f"npz:{path}", split="all").labels, labels)
    with pytest.raises(ValueError, match="unsplit"):
        load(f"npz:{path}", split="test")


def test_npz_split_layout_and_errors(tmp_path):
    rng = np.random.default_rng(2)
    tr = rng.integers(0, 256, (4, 3, 3, 3), dtype=np.uint8)
    te = rng.integers(0, 256, (2, 3, 3, 3), dtype=np.uint8)
    path = tmp_path / "s.npz"
    np.savez(path, train_images=tr, train_labels=[0, 1, 0, 1], test_images=te,
             test_labels=[4, 0], classes=np.array(list("abcde")))
    train, test = train_test(f"npz:{path}")
    assert len(train) == 4 and len(test) == 2
    assert train.num_classes == test.num_classes == 5 and train.class_names == tuple("abcde")
    both = load(f"npz:{path}", split="all")
    np.testing.assert_array_equal(both.images, np.concatenate([tr, te]) / np.float32(255))
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=rng.random((2, 3, 3)) * 2, labels=[0, 1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        load(f"npz:{bad}")
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x=np.zeros(3))
    with pytest.raises(ValueError, match="no known layout"):
        load(f"npz:{wrong}")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load(f"npz:{tmp_path / 'missing.npz'}")


def _jpeg_bytes(img, **kw):
    b = io.BytesIO()
    Image.fromarray(img).save(b, format="JPEG", **kw)
    return b.getvalue()


def _jpeg_layout(path, splits, classes):
    """Writes the cifar10-jpeg.npz layout for {split: (list of JPEG bytes, labels)}."""
    arrays = {"classes": np.array(classes)}
    for split, (blobs, labels) in splits.items():
        arrays[f"{split}_jpeg"] = np.frombuffer(b"".join(blobs), np.uint8)
        arrays[f"{split}_offsets"] = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
        arrays[f"{split}_labels"] = np.asarray(labels, np.uint8)
    np.savez(path, **arrays)


def _smooth_images(n, c=3):
    yy, xx = np.mgrid[0:8, 0:8]
    imgs = [np.stack([(xx * 16 + 10 * i) % 256, (yy * 20 + 5 * i) % 256, (xx + yy) * 8 + i], -1)
            for i in range(n)]
    imgs = np.asarray(imgs, np.uint8)
    return imgs if c == 3 else imgs[..., :1]


def test_npz_jpeg_layout_decodes_and_caches(tmp_path, cache, monkeypatch):
    src = _smooth_images(7)
    blobs = [_jpeg_bytes(im, quality=95, subsampling=0) for im in src]
    path = tmp_path / "j.npz"
    _jpeg_layout(path, {"train": (blobs[:5], [0, 1, 2, 0, 1]), "test": (blobs[5:], [2, 2])},
                 ["cat", "dog", "eel"])
    calls = []
    real_decode = npz_source.decode_jpegs
    monkeypatch.setattr(npz_source, "decode_jpegs",
                        lambda *a, **k: calls.append(1) or real_decode(*a, **k))
    train = load(f"npz:{path}")
    assert len(calls) == 1 and train.images.shape == (5, 8, 8, 3)
    assert train.class_names == ("cat", "dog", "eel") and train.num_classes == 3
    pil = np.stack([np.asarray(Image.open(io.BytesIO(b))) for b in blobs[:5]])
    np.testing.assert_array_equal(train.images, pil / np.float32(255))  # exactly Pillow's decode
    assert np.abs(train.images - src[:5] / 255).max() <= 8 / 255  # JPEG q95 tolerance
    written = sorted(p.name for p in (cache / "decoded").iterdir())
    assert len(written) == 1 and written[0].startswith("j-") and written[0].endswith("-train.npy")

    def fail(*a, **k):
        raise AssertionError("decoded again despite a cache hit")

    monkeypatch.setattr(npz_source, "decode_jpegs", fail)
    again = load(f"npz:{path}")
    np.testing.assert_array_equal(again.images, train.images)
    with pytest.raises(AssertionError, match="despite"):  # the test split is not cached yet
        load(f"npz:{path}", split="test")
    monkeypatch.setattr(npz_source, "decode_jpegs", real_decode)
    both = load(f"npz:{path}", split="all")
    np.testing.assert_array_equal(both.labels, [0, 1, 2, 0, 1, 2, 2])
    # the cache is keyed on content: a new mtime alone is a hit, new bytes are a miss
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    monkeypatch.setattr(npz_source, "decode_jpegs", fail)
    np.testing.assert_array_equal(load(f"npz:{path}").images, train.images)
    _jpeg_layout(path, {"train": (blobs[:5], [0, 1, 2, 0, 0]), "test": (blobs[5:], [2, 2])},
                 ["cat", "dog", "eel"])
    with pytest.raises(AssertionError, match="despite"):
        load(f"npz:{path}")


def test_npz_jpeg_grayscale(tmp_path, cache):
    src = _smooth_images(3, c=1)[..., 0]
    path = tmp_path / "g.npz"
    blobs = [_jpeg_bytes(im, quality=95) for im in src]
    _jpeg_layout(path, {"train": (blobs, [0, 1, 0])}, ["a", "b"])
    ds = load(f"npz:{path}")
    assert ds.images.shape == (3, 8, 8, 1)
    assert np.abs(ds.images[..., 0] - src / 255).max() <= 8 / 255
    with pytest.raises(ValueError, match="no 'test' split"):
        load(f"npz:{path}", split="test")


@pytest.mark.skipif(not REAL_CIFAR.is_file(),
                    reason="set JAXCURV_DATA_DIR to a folder holding cifar10-jpeg.npz")
def test_real_cifar10_jpeg_handful(tmp_path, cache):
    with np.load(REAL_CIFAR) as z:
        classes = [str(c) for c in z["classes"]]
        picked = {}
        for split, idx in (("train", [0, 4999, 25000, 49999]), ("test", [0, 9999])):
            buf, off, lab = z[f"{split}_jpeg"], z[f"{split}_offsets"], z[f"{split}_labels"]
            assert off.size - 1 == {"train": 50000, "test": 10000}[split]
            picked[split] = ([buf[off[i] : off[i + 1]].tobytes() for i in idx], lab[idx])
    assert classes[:2] == ["airplane", "automobile"] and len(classes) == 10
    np.testing.assert_array_equal(picked["train"][1], [0, 0, 5, 9])  # ordered class by class
    small = tmp_path / "cifar10-jpeg.npz"
    _jpeg_layout(small, picked, classes)
    train, test = train_test("cifar10", data_dir=tmp_path)  # found by its file name in data_dir
    assert train.images.shape == (4, 32, 32, 3) and len(test) == 2
    assert train.num_classes == 10 and train.class_names == tuple(classes)
    ref = np.stack([np.asarray(Image.open(io.BytesIO(b))) for b in picked["train"][0]])
    np.testing.assert_array_equal(train.images, ref / np.float32(255))
    assert 0.05 < train.images.std() < 0.5  # natural images, not blank


# --- official CIFAR pickles -------------------------------------------------------------------


def _official_row(img):
    """The CIFAR format: 1024 red, then 1024 green, then 1024 blue values, each row-major."""
    return np.concatenate([img[:, :, ch].reshape(-1) for ch in range(3)])


def _write_pickle(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _fake_cifar10(root, rng, per_batch=2):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    images, labels = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        imgs = rng.integers(0, 256, (per_batch, 32, 32, 3), dtype=np.uint8)
        labs = rng.integers(0, 10, per_batch).tolist()
        _write_pickle(folder / name, {b"batch_label": name.encode(), b"labels": labs,
                                      b"data": np.stack([_official_row(im) for im in imgs]),
                                      b"filenames": [b"x.png"] * per_batch})
        images.append(imgs)
        labels.append(labs)
    classes = "airplane automobile bird cat deer dog frog horse ship truck"
    names = [n.encode() for n in classes.split()]
    _write_pickle(folder / "batches.meta", {b"label_names": names, b"num_vis": 3072})
    return folder, np.concatenate(images), np.concatenate(labels)


def test_cifar10_official_pickles_dir_and_archive(tmp_path, no_network):
    rng = np.random.default_rng(3)
    folder, images, labels = _fake_cifar10(tmp_path / "a", rng)
    train = load("cifar10", data_dir=tmp_path / "a")
    np.testing.assert_array_equal(train.images, images[:10] / np.float32(255))
    np.testing.assert_array_equal(train.labels, labels[:10])
    assert train.class_names[0] == "airplane" and train.num_classes == 10
    assert train.name == "cifar10"
    test = load("cifar10", split="test", data_dir=folder)  # the batches folder itself also works
    np.testing.assert_array_equal(test.images, images[10:] / np.float32(255))
    archive_dir = tmp_path / "b"
    archive_dir.mkdir()
    with tarfile.open(archive_dir / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    both = load("cifar10", split="all", data_dir=archive_dir)
    np.testing.assert_array_equal(both.images, images / np.float32(255))
    np.testing.assert_array_equal(both.labels, labels)


def test_cifar100_uses_fine_labels(tmp_path, no_network):
    rng = np.random.default_rng(4)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    imgs = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    fine, coarse = [99, 0, 57, 3, 12], [19, 0, 1, 2, 3]
    for name, sl in (("train", slice(0, 3)), ("test", slice(3, 5))):
        _write_pickle(folder / name, {b"data": np.stack([_official_row(im) for im in imgs[sl]]),
                                      b"fine_labels": fine[sl], b"coarse_labels": coarse[sl]})
    _write_pickle(folder / "meta", {b"fine_label_names": [f"f{i}".encode() for i in range(100)],
                                    b"coarse_label_names": [f"c{i}".encode() for i in range(20)]})
    train, test = train_test("cifar100", data_dir=tmp_path)
    np.testing.assert_array_equal(train.labels, fine[:3])
    np.testing.assert_array_equal(test.images, imgs[3:] / np.float32(255))
    assert train.num_classes == 100 and train.class_names[99] == "f99"


def test_cifar_npz_in_data_dir(tmp_path):
    rng = np.random.default_rng(5)
    tr = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "cifar10.npz", train_images=tr, train_labels=[9, 0, 1],
             test_images=tr[:1], test_labels=[2])
    ds = load("cifar10", data_dir=tmp_path)
    np.testing.assert_array_equal(ds.images, tr / np.float32(255))
    assert ds.num_classes == 10


# --- locate: where the local CIFAR files are --------------------------------------------------


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def _official_names(name):
    if name == "cifar10":
        return [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
    return ["train", "test", "meta"]


def test_locate_order_folder_archive_npz(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    assert locate("cifar10", root) is None and locate("cifar100", root) is None
    jpeg = _touch(root / "cifar10-jpeg.npz")
    assert locate("cifar10", root) == jpeg
    assert locate("cifar100", root) is None  # the CIFAR-10 files never stand in for CIFAR-100
    assert locate("cifar10", root) == jpeg
    plain = _touch(root / "cifar10.npz")
    assert locate("cifar10", str(root)) == plain
    archive = _touch(root / "cifar-10-python.tar.gz")
    assert locate("cifar10", root) == archive
    folder = root / "cifar-10-batches-py"
    names = _official_names("cifar10")
    for f in names[:-1]:
        _touch(folder / f)
    assert locate("cifar10", root) == archive  # an incomplete folder is skipped
    _touch(folder / names[-1])
    assert locate("cifar10", root) == folder
    assert locate("cifar10", folder) == folder  # the official folder itself as data_dir
    for f in _official_names("cifar100"):
        _touch(root / "cifar-100-python" / f)
    assert locate("cifar100", root) == root / "cifar-100-python"
    _touch(tmp_path / "e" / "cifar100.npz")
    assert locate("cifar100", tmp_path / "e") == tmp_path / "e" / "cifar100.npz"
    assert locate("cifar10", tmp_path / "missing") is None
    with pytest.raises(ValueError, match="cifar10"):
        locate("mnist", root)


def test_locate_reads_env_var_after_data_dir(tmp_path, monkeypatch):
    env_dir, arg_dir, empty = tmp_path / "env", tmp_path / "arg", tmp_path / "empty"
    empty.mkdir()
    env_file = _touch(env_dir / "cifar10-jpeg.npz")
    arg_file = _touch(arg_dir / "cifar10.npz")
    assert locate("cifar10") is None
    monkeypatch.setenv("JAXCURV_DATA_DIR", str(env_dir))
    assert locate("cifar10") == env_file
    assert locate("cifar10", empty) == env_file  # nothing in data_dir: the variable's folder
    assert locate("cifar10", arg_dir) == arg_file  # data_dir first
    assert locate("cifar100") is None
    monkeypatch.setenv("JAXCURV_DATA_DIR", "")
    assert locate("cifar10") is None


def test_locate_never_searches_beside_the_working_folder(tmp_path, monkeypatch):
    _touch(tmp_path / "shared" / "data" / "cifar10-jpeg.npz")
    _touch(tmp_path / "repo" / "shared" / "data" / "cifar10-jpeg.npz")
    monkeypatch.chdir(tmp_path / "repo")
    assert locate("cifar10") is None


def test_cifar10_jpeg_npz_found_by_data_dir_and_env_var(tmp_path, cache, no_network, monkeypatch):
    src = _smooth_images(5)
    blobs = [_jpeg_bytes(im, quality=95) for im in src]
    classes = "airplane automobile bird cat deer dog frog horse ship truck".split()
    folder = tmp_path / "data"
    folder.mkdir()
    _jpeg_layout(folder / "cifar10-jpeg.npz",
                 {"train": (blobs[:3], [0, 9, 4]), "test": (blobs[3:], [1, 2])}, classes)
    train = load("cifar10", data_dir=folder)
    np.testing.assert_array_equal(train.labels, [0, 9, 4])
    assert train.name == "cifar10" and train.class_names == tuple(classes)
    pil = np.stack([np.asarray(Image.open(io.BytesIO(b))) for b in blobs[:3]])
    np.testing.assert_array_equal(train.images, pil / np.float32(255))
    monkeypatch.setenv("JAXCURV_DATA_DIR", str(folder))
    test = load("cifar10", split="test")  # no data_dir: the environment variable's folder
    np.testing.assert_array_equal(test.labels, [1, 2])


def test_missing_cifar_error_leads_with_the_command_line_fix(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    env_dir = tmp_path / "env"
    env_dir.mkdir()
    monkeypatch.setenv("JAXCURV_DATA_DIR", str(env_dir))
    with pytest.raises(FileNotFoundError) as err:
        load("cifar10", data_dir=tmp_path / "arg")
    msg = str(err.value)
    assert str(tmp_path / "arg" / "cifar10-jpeg.npz") in msg
    assert str(env_dir / "cifar-10-batches-py") in msg  # both folders were searched
    for text in ("--data-dir DIR", "JAXCURV_DATA_DIR=DIR", "cifar10-jpeg.npz",
                 'pip install "jaxcurv[tfds]"', "cifar-10-python.tar.gz"):
        assert text in msg, text
    assert msg.index("--data-dir") < msg.index("load('cifar10', data_dir=")
    monkeypatch.delenv("JAXCURV_DATA_DIR")
    with pytest.raises(FileNotFoundError, match="JAXCURV_DATA_DIR unset"):
        load("cifar100")


# --- TFDS -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tfds():
    return pytest.importorskip(
        "tensorflow_datasets",
        reason="tensorflow-datasets not installed (pip install 'jaxcurv[test]')",
    )


def test_tfds_mock_cifar10_cifar100_mnist_offline(tfds, no_network):
    with tfds.testing.mock_data(num_examples=5):
        c10 = load("cifar10")
        c100 = load("cifar100", split="test")
        mnist = load("tfds:mnist")
    assert c10.images.shape == (5, 32, 32, 3) and c10.num_classes == 10 and c10.name == "cifar10"
    assert c100.images.shape == (5, 32, 32, 3) and c100.num_classes == 100
    assert mnist.images.shape == (5, 28, 28, 1) and mnist.num_classes == 10
    assert mnist.name == "tfds:mnist"
    for ds in (c10, c100, mnist):
        assert ds.images.dtype == np.float32 and 0 <= ds.images.min() and ds.images.max() <= 1
        assert ds.labels.dtype == np.int32 and ds.labels.max() < ds.num_classes
        assert ds.images.std() > 0.1  # mock pixels are uniform on 0..255, not a constant


@pytest.fixture(scope="module")
def tiny_tfds_dir(tfds, tmp_path_factory):
    """A real TFDS dataset prepared as array_record files; images stored as PNG like CIFAR in TFDS
    (PNG bytes made with Pillow: TFDS encodes numpy images with TensorFlow, which is absent)."""

    class JaxcurvTinyImages(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict({
                    "image": tfds.features.Image(shape=(4, 5, 3)),
                    "label": tfds.features.ClassLabel(names=["a", "b", "c"]),
                }),
                supervised_keys=("image", "label"),
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(6, 0), "test": self._generate_examples(3, 1)}

        def _generate_examples(self, n, seed):
            for i, img in enumerate(_tiny_images(n, seed)):
                png = io.BytesIO()
                Image.fromarray(img).save(png, format="PNG")
                yield i, {"image": png.getvalue(), "label": (i + seed) % 3}

    root = tmp_path_factory.mktemp("tfds")
    JaxcurvTinyImages(data_dir=str(root), file_format="array_record").download_and_prepare()
    return root


def _tiny_images(n, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, 4, 5, 3), dtype=np.uint8)


def test_tfds_prepared_array_record_without_tensorflow(
    tfds, tiny_tfds_dir, no_network, monkeypatch
):
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # reading must not need TensorFlow
    train = load("tfds:jaxcurv_tiny_images", data_dir=tiny_tfds_dir)
    test = load("tfds:jaxcurv_tiny_images", split="test", data_dir=tiny_tfds_dir)
    both = load("tfds:jaxcurv_tiny_images", split="all", data_dir=tiny_tfds_dir)
    assert (len(train), len(test), len(both)) == (6, 3, 9)
    assert train.class_names == ("a", "b", "c") and train.num_classes == 3
    # TFDS may shuffle records: match images to the generated ones by content
    gen = _tiny_images(6, 0)
    order = [int(np.flatnonzero((gen == np.rint(im * 255).astype(np.uint8)).all((1, 2, 3)))[0])
             for im in train.images]
    assert sorted(order) == list(range(6))
    np.testing.assert_array_equal(train.labels, np.array(order) % 3)
    np.testing.assert_array_equal(train.images, gen[order] / np.float32(255))
    head = load("tfds:jaxcurv_tiny_images", split="train[:2]", data_dir=tiny_tfds_dir)
    assert len(head) == 2


def test_tfds_unprepared_and_unknown_errors(tfds, tmp_path, no_network):
    with pytest.raises(FileNotFoundError, match=r"download_and_prepare\(\)") as err:
        load("tfds:mnist", data_dir=tmp_path)
    assert "file_format='array_record'" in str(err.value) and str(tmp_path) in str(err.value)
    with pytest.raises(FileNotFoundError) as err:
        load("cifar10", data_dir=tmp_path)
    msg = str(err.value)
    assert "cifar-10-python.tar.gz" in msg and "download_and_prepare" in msg
    assert str(tmp_path / "cifar-10-batches-py") in msg
    with pytest.raises(ValueError, match="TFDS has no dataset"):
        load("tfds:no_such_dataset_xyz")


def test_missing_tfds_install_is_explained(monkeypatch, tmp_path, capsys):
    from jaxcurv.cli import main
    from jaxcurv.errors import MissingDependency

    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import now raises ImportError
    with pytest.raises(MissingDependency, match=r"pip install 'jaxcurv\[tfds\]'") as err:
        load("tfds:mnist")
    assert isinstance(err.value, ImportError) and err.value.extra == "tfds"
    assert main(["audit", "--dataset", "tfds:mnist", "--quiet", "--out",
                 str(tmp_path / "out")]) == 2
    printed = capsys.readouterr().err.strip()
    assert len(printed.splitlines()) == 1 and "jaxcurv[tfds]" in printed, printed
    with pytest.raises(FileNotFoundError, match="not installed") as err:
        load("cifar100", data_dir=tmp_path)
    assert "cifar-100-python.tar.gz" in str(err.value)


def test_unknown_names_and_splits():
    with pytest.raises(ValueError, match="valid forms.*digits.*cifar10.*tfds:<name>.*npz:<path>"):
        load("imagenet")
    with pytest.raises(ValueError, match="split"):
        load("digits", split="validation")
    with pytest.raises(ValueError, match="needs a dataset name"):
        load("tfds:")
    with pytest.raises(ValueError, match="needs a file path"):
        load("npz:")


# --- subset masks -----------------------------------------------------------------------------


@pytest.mark.parametrize("k,f", [(2, 0.5), (5, 0.5), (7, 0.3), (16, 0.5), (64, 0.25)])
def test_subset_masks_balanced(k, f):
    n = 3000
    masks = subset_masks(n, k, fraction=f, seed=1)
    m = round(f * k)
    assert masks.shape == (k, n) and masks.dtype == np.bool_
    np.testing.assert_array_equal(masks.sum(axis=0), np.full(n, m))
    sizes = masks.sum(axis=1)
    assert sizes.sum() == m * n  # so the mean member size is exactly m·N/K ≈ f·N
    p = m / k
    assert np.all(np.abs(sizes - p * n) < 6 * np.sqrt(n * p * (1 - p)))
    np.testing.assert_array_equal(masks, subset_masks(n, k, fraction=f, seed=1))
    assert (masks != subset_masks(n, k, fraction=f, seed=2)).any()


def test_subset_masks_membership_sets_are_uniform():
    """For K=4, m=2 each example's member set is one of C(4,2)=6 sets, uniformly."""
    masks = subset_masks(6000, 4, fraction=0.5, seed=0)
    codes = (masks * (1 << np.arange(4))[:, None]).sum(0)
    counts = np.array([np.sum(codes == c) for c in (3, 5, 6, 9, 10, 12)])
    assert _chi2_pvalue(counts, np.ones(6)) > 1e-3
    for scale in (2 / 3, 3 / 2):  # the test would reject a skewed distribution
        assert _chi2_pvalue(counts, [scale, scale, scale, 1, 1, 1]) < 1e-3


def test_subset_masks_errors():
    for kwargs, msg in [
        (dict(fraction=0.0), "strictly between"),
        (dict(fraction=1.0), "strictly between"),
        (dict(fraction=-0.2), "strictly between"),
        (dict(num_models=0), "num_models"),
        (dict(num_models=1), "no in models"),  # round(0.5) == 0
        (dict(num_models=3, fraction=0.9), "no out models"),  # round(2.7) == 3
        (dict(num_examples=0), "num_examples"),
    ]:
        args = {"num_examples": 10, "num_models": 4, "fraction": 0.5, **kwargs}
        n, k = args.pop("num_examples"), args.pop("num_models")
        with pytest.raises(ValueError, match=msg):
            subset_masks(n, k, **args)


# --- label noise ------------------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.37, 1.0])
def test_label_noise_exact_count(fraction):
    labels = np.random.default_rng(0).integers(0, 7, 501).astype(np.int32)
    noisy, flipped = add_label_noise(labels, fraction, 7, seed=3)
    assert flipped.dtype == np.bool_ and noisy.dtype == labels.dtype
    assert flipped.sum() == round(fraction * 501)
    assert np.all(noisy[flipped] != labels[flipped])
    np.testing.assert_array_equal(noisy[~flipped], labels[~flipped])
    assert noisy.min() >= 0 and noisy.max() < 7
    again = add_label_noise(labels, fraction, 7, seed=3)
    np.testing.assert_array_equal(again[0], noisy)
    np.testing.assert_array_equal(again[1], flipped)
    if 0 < fraction < 1:
        assert (add_label_noise(labels, fraction, 7, seed=4)[1] != flipped).any()


def test_label_noise_new_class_uniform_among_others():
    c = 5
    labels = np.zeros(20000, np.int64) + np.arange(20000) % c
    noisy, flipped = add_label_noise(labels, 0.5, c, seed=0)
    shift = ((noisy - labels) % c)[flipped]
    counts = np.bincount(shift, minlength=c)
    assert counts[0] == 0
    assert _chi2_pvalue(counts[1:], np.ones(c - 1)) > 1e-3
    for scale in (2 / 3, 3 / 2):
        assert _chi2_pvalue(counts[1:], [scale, 1, 1, 1]) < 1e-3


def test_label_noise_errors():
    y = np.array([0, 1, 2])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        add_label_noise(y, 1.5, 3)
    with pytest.raises(ValueError, match="num_classes"):
        add_label_noise(y, 0.5, 1)
    with pytest.raises(ValueError, match="lie in"):
        add_label_noise(y, 0.5, 2)
    with pytest.raises(ValueError, match="1-D integer"):
        add_label_noise(y.reshape(3, 1).astype(float), 0.5, 3)


# --- augmentation -----------------------------------------------------------------------------


def _naive_crop(img, dy, dx, p, mode):
    padded = np.pad(img, ((p, p), (p, p), (0, 0)), mode=mode)
    return padded[dy : dy + img.shape[0], dx : dx + img.shape[1]]


@pytest.mark.parametrize("mode", ["constant", "reflect"])
def test_random_crop_is_a_uniformly_shifted_copy(mode):
    p = 1
    img = np.random.default_rng(0).random((5, 6, 2)).astype(np.float32) + 0.5
    keys = jax.random.split(jax.random.PRNGKey(0), 900)
    crop = jax.jit(jax.vmap(lambda k: random_crop(k, img, padding=p, pad_mode=mode)))
    crops = np.asarray(crop(keys))
    candidates = np.stack([_naive_crop(img, dy, dx, p, mode)  # offset (dy, dx) -> 3·dy + dx
                           for dy in range(2 * p + 1) for dx in range(2 * p + 1)])
    hits = np.all(crops[:, None] == candidates[None], axis=(2, 3, 4))  # (keys, offsets)
    np.testing.assert_array_equal(hits.sum(1), 1)  # every crop is exactly one shifted copy
    counts = hits.sum(0)
    assert _chi2_pvalue(counts, np.ones(9)) > 1e-3
    assert _chi2_pvalue(counts, [2 / 3] * 3 + [1] * 3 + [3 / 2] * 3) < 1e-3


def test_crop_padding_zero_is_identity_and_flip_involution():
    img = jnp.asarray(np.random.default_rng(1).random((4, 7, 3)), jnp.float32)
    crop0 = jax.jit(lambda k: random_crop(k, img, padding=0))
    flip2 = jax.jit(lambda k: random_flip(k, random_flip(k, img)))
    flips = []
    for k in jax.random.split(jax.random.PRNGKey(1), 8):
        np.testing.assert_array_equal(crop0(k), img)
        np.testing.assert_array_equal(flip2(k), img)
    keys = jax.random.split(jax.random.PRNGKey(2), 2000)
    out = np.asarray(jax.vmap(lambda k: random_flip(k, img))(keys))
    mirrored = np.all(out == np.asarray(img)[:, ::-1], axis=(1, 2, 3))
    assert np.all(mirrored | np.all(out == np.asarray(img), axis=(1, 2, 3)))
    n_flip = int(mirrored.sum())
    assert stats.binomtest(n_flip, 2000, 0.5).pvalue > 1e-3
    for p in (1 / 3, 3 / 4):  # a wrong flip probability is rejected
        assert stats.binomtest(n_flip, 2000, p).pvalue < 1e-3


def test_augment_composes_crop_then_flip():
    img = jnp.asarray(np.random.default_rng(2).random((6, 6, 1)), jnp.float32)

    @jax.jit
    def both(key):
        kc, kf = jax.random.split(key)
        crop = random_crop(kc, img, padding=2)
        no_flip = augment(key, img, padding=2, flip=False)
        return augment(key, img, padding=2), random_flip(kf, crop), no_flip, crop

    for key in jax.random.split(jax.random.PRNGKey(3), 4):
        aug, manual, aug_noflip, crop = both(key)
        np.testing.assert_array_equal(aug, manual)
        np.testing.assert_array_equal(aug_noflip, crop)


def test_augment_batch_under_jit_and_vmap_over_members():
    rng = np.random.default_rng(3)
    images = jnp.asarray(rng.random((5, 8, 8, 3)), jnp.float32)
    member_keys = jax.random.split(jax.random.PRNGKey(4), 3)
    fn = jax.jit(jax.vmap(lambda k, x: augment_batch(k, x, padding=2), in_axes=(0, None)))
    out = fn(member_keys, images)
    assert out.shape == (3, 5, 8, 8, 3) and out.dtype == jnp.float32

    @jax.jit
    def reference(key):  # one member without vmap, and image by image with split keys
        keys = jax.random.split(key, 5)
        per_image = [augment(k, images[i], padding=2) for i, k in enumerate(keys)]
        return augment_batch(key, images, padding=2), jnp.stack(per_image)

    for k in range(3):  # each member equals its own unbatched call
        batch, per_image = reference(member_keys[k])
        np.testing.assert_array_equal(out[k], batch)
        np.testing.assert_array_equal(out[k], per_image)
    assert not np.array_equal(out[0], out[1]) and not np.array_equal(out[1], out[2])
    u8 = jnp.asarray(rng.integers(0, 256, (2, 8, 8, 1)), jnp.uint8)
    typed = jax.random.key(5)  # new-style typed keys work too
    out8 = jax.jit(lambda k: augment_batch(k, u8, pad_mode="reflect"))(typed)
    assert out8.dtype == jnp.uint8 and out8.shape == u8.shape


def test_augmentation_errors():
    img = jnp.zeros((4, 4, 1))
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="padding"):
        random_crop(key, img, padding=-1)
    with pytest.raises(ValueError, match="pad_mode"):
        random_crop(key, img, pad_mode="wrap")
    with pytest.raises(ValueError, match="reflect padding"):
        random_crop(key, img, padding=4, pad_mode="reflect")
    with pytest.raises(ValueError, match=r"\(H, W, C\)"):
        augment(key, img[0])
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        augment_batch(key, img)


# --- channel statistics -----------------------------------------------------------------------


def test_channel_stats_and_normalize():
    x = np.random.default_rng(6).random((10, 3, 4, 2)).astype(np.float32)
    mean, std = channel_stats(x)
    flat = x.reshape(-1, 2).astype(np.float64)
    np.testing.assert_allclose(mean, flat.mean(0), rtol=1e-6)
    np.testing.assert_allclose(std, flat.std(0), rtol=1e-6)
    z = np.asarray(jax.jit(normalize)(jnp.asarray(x), mean, std)).reshape(-1, 2)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(0), 1, rtol=1e-5)
    with pytest.raises(ValueError, match="std must be > 0"):
        normalize(x, mean, np.array([1.0, 0.0]))


# --- inconsistent data: refused with the fix, before any training --------------------------------


def _split_npz(path, train_labels, test_labels):
    n, m = len(train_labels), len(test_labels)
    np.savez(path, train_images=np.zeros((n, 4, 4, 1), np.uint8), train_labels=train_labels,
             test_images=np.zeros((m, 4, 4, 1), np.uint8), test_labels=test_labels)


@pytest.mark.parametrize("train_extra, test_extra, missing, stray, where", [
    ([57], [], "10–56", 57, "in 1 example"),
    ([], [12], "10–12", 12, "only in the test split"),
    ([], [10], "10", 10, "only in the test split"),
])
def test_a_stray_label_is_refused_instead_of_adding_empty_classes(tmp_path, train_extra,
                                                                  test_extra, missing, stray,
                                                                  where):
    from jaxcurv.errors import DataError

    path = tmp_path / "d.npz"
    _split_npz(path, np.array([*(np.arange(40) % 10), *train_extra], np.int64),
               np.array([*range(10), *test_extra], np.int64))
    for split in ("train", "test", "all"):
        with pytest.raises(DataError, match=f"classes {missing} without a training example") as e:
            load(f"npz:{path}", split=split)
        assert f"label {stray} occurs {where}" in str(e.value) and "num_classes" in str(e.value)
    # the fix the message names: declare the classes
    np.savez(path, train_images=np.zeros((41, 4, 4, 1), np.uint8),
             train_labels=np.r_[np.arange(40) % 10, 57], test_images=np.zeros((2, 4, 4, 1)),
             test_labels=[0, 1], num_classes=np.int64(58))
    assert load(f"npz:{path}").num_classes == 58


def test_zero_test_examples_is_one_line_before_training(tmp_path, capsys):
    from jaxcurv.cli import main

    path = tmp_path / "d.npz"
    _split_npz(path, np.arange(40) % 10, np.zeros(0, np.int64))
    with pytest.raises(ValueError, match="no test examples"):
        data.train_test(f"npz:{path}")
    assert main(["audit", "--dataset", f"npz:{path}", "--quiet", "--out",
                 str(tmp_path / "out")]) == 2
    printed = capsys.readouterr().err.strip()
    assert len(printed.splitlines()) == 1 and "no test examples" in printed, printed
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_jpeg_progress_bar_counts_every_image(capsys):
    images = [_jpeg_bytes(np.full((4, 4, 3), 10 * i, np.uint8)) for i in range(5)]
    buffer = np.frombuffer(b"".join(images), np.uint8)
    offsets = np.cumsum([0] + [len(b) for b in images])
    npz_source.decode_jpegs(buffer, offsets, progress=True)
    bar = capsys.readouterr().err
    assert "5/5" in bar and "/4" not in bar, bar
