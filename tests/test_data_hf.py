"""'hf:<folder>': folders written by Hugging Face datasets' save_to_disk, built here with datasets."""

import sys

import numpy as np
import pytest

from jaxcurv import data
from jaxcurv.errors import DataError, DataNotFound, MissingDependency

NEEDS_DATASETS = "Hugging Face datasets is an optional extra: pip install 'jaxcurv[hf]'"


@pytest.fixture
def hf():
    return pytest.importorskip("datasets", reason=NEEDS_DATASETS)


def _images(seed, n, shape=(5, 4, 3)):
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def _split(hf, images, labels, *, label_feature=None, image_feature=None, extra=None):
    label_feature = label_feature or hf.ClassLabel(names=["cat", "dog", "eel", "fox", "gnu"])
    columns = {"image": list(images), "label": list(labels), **(extra or {})}
    features = {"image": image_feature or hf.Image(), "label": label_feature}
    for key, values in (extra or {}).items():
        features[key] = hf.Value("int64")
    return hf.Dataset.from_dict(columns, features=hf.Features(features))


def test_dataset_dict_splits_become_our_dataset(hf, tmp_path):
    train_x, test_x = _images(0, 7), _images(1, 3)
    train_y, test_y = np.array([0, 1, 2, 0, 1, 2, 0]), np.array([2, 1, 0])
    hf.DatasetDict(train=_split(hf, train_x, train_y, extra={"id": list(range(7))}),
                   test=_split(hf, test_x, test_y, extra={"id": [7, 8, 9]})
                   ).save_to_disk(str(tmp_path / "pets"))
    name = f"hf:{tmp_path / 'pets'}"
    train = data.load(name)
    assert train.images.dtype == np.float32 and train.images.shape == (7, 5, 4, 3)
    np.testing.assert_array_equal(train.images, train_x / np.float32(255))  # PNG: lossless
    assert train.labels.dtype == np.int32
    np.testing.assert_array_equal(train.labels, train_y)
    # num_classes and names come from the ClassLabel feature, not from the largest label.
    assert train.num_classes == 5 and train.class_names == ("cat", "dog", "eel", "fox", "gnu")
    assert train.name == name
    test = data.load(name, split="test")
    np.testing.assert_array_equal(test.images, test_x / np.float32(255))
    both = data.load(name, split="all")
    np.testing.assert_array_equal(both.labels, np.concatenate([train_y, test_y]))
    tr, te = data.train_test(name)
    assert len(tr) == 7 and len(te) == 3
    with pytest.raises(DataError, match=r"no 'validation' split \(it has \['train', 'test'\]\)"):
        data.load(name, split="validation")


def test_grayscale_arrays_and_a_single_dataset(hf, tmp_path):
    gray = _images(2, 4, shape=(6, 6))
    _split(hf, gray, [0, 1, 1, 0], label_feature=hf.ClassLabel(num_classes=2)
           ).save_to_disk(str(tmp_path / "gray"))
    ds = data.load(f"hf:{tmp_path / 'gray'}")
    assert ds.images.shape == (4, 6, 6, 1) and ds.num_classes == 2
    np.testing.assert_array_equal(ds.images[..., 0], gray / np.float32(255))
    np.testing.assert_array_equal(data.load(f"hf:{tmp_path / 'gray'}", split="all").labels,
                                  ds.labels)
    with pytest.raises(DataError, match="one split .*DatasetDict"):
        data.load(f"hf:{tmp_path / 'gray'}", split="test")
    floats = np.random.default_rng(3).random((3, 4, 4, 2)).astype(np.float32)
    _split(hf, floats, [2, 0, 1], image_feature=hf.Array3D((4, 4, 2), "float32"),
           label_feature=hf.ClassLabel(num_classes=3)).save_to_disk(str(tmp_path / "arrays"))
    arr = data.load(f"hf:{tmp_path / 'arrays'}")
    np.testing.assert_array_equal(arr.images, floats)


def test_column_choice_and_its_errors(hf, tmp_path):
    x = _images(4, 3)
    two = hf.Dataset.from_dict(
        {"img": list(x), "fine_label": [0, 3, 1], "coarse_label": [0, 1, 0]},
        features=hf.Features({"img": hf.Image(), "fine_label": hf.ClassLabel(num_classes=4),
                              "coarse_label": hf.ClassLabel(num_classes=2)}))
    two.save_to_disk(str(tmp_path / "two"))
    with pytest.raises(DataError, match=r"found 2 .*fine_label: ClassLabel.*rename_column"):
        data.load(f"hf:{tmp_path / 'two'}")
    two.rename_column("fine_label", "label").save_to_disk(str(tmp_path / "renamed"))
    ds = data.load(f"hf:{tmp_path / 'renamed'}")
    assert ds.num_classes == 4 and list(ds.labels) == [0, 3, 1]
    plain = hf.Dataset.from_dict({"image": list(x), "label": [0, 1, 0]},
                                 features=hf.Features({"image": hf.Image(),
                                                       "label": hf.Value("int64")}))
    plain.save_to_disk(str(tmp_path / "plain"))
    with pytest.raises(DataError, match=r"found 0 .*cast_column\('label', "):
        data.load(f"hf:{tmp_path / 'plain'}")


def test_unreadable_folders_are_one_line_errors(hf, tmp_path):
    (tmp_path / "empty").mkdir()
    mixed = [_images(5, 1)[0], _images(6, 1, shape=(6, 4, 3))[0]]
    _split(hf, mixed, [0, 1]).save_to_disk(str(tmp_path / "mixed"))
    _split(hf, _images(7, 2), [0, -1], label_feature=hf.ClassLabel(num_classes=2)
           ).save_to_disk(str(tmp_path / "unlabeled"))
    with pytest.raises(DataNotFound, match="no folder at") as missing:
        data.load(f"hf:{tmp_path / 'missing'}")
    assert "--dataset hf:FOLDER" in missing.value.command_line
    for folder, match in [("empty", "not a folder written by"), ("mixed", "differ in size"),
                          ("unlabeled", "without a label")]:
        with pytest.raises(DataError, match=match) as err:
            data.load(f"hf:{tmp_path / folder}")
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="'hf:' needs a folder"):
        data.load("hf:")


def test_missing_extra_is_a_one_line_error_naming_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` raises ImportError
    with pytest.raises(MissingDependency) as err:
        data.load(f"hf:{tmp_path}")
    message = str(err.value)
    assert "\n" not in message and "pip install 'jaxcurv[hf]'" in message
    assert err.value.__cause__ is None and err.value.extra == "hf"
    assert isinstance(err.value, ImportError)
    from jaxcurv.cli import main

    assert main(["curvature", "--dataset", f"hf:{tmp_path}", "--out", str(tmp_path / "o")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "jaxcurv[hf]" in lines[0]


def test_command_line_reads_a_folder(hf, tmp_path):
    rng = np.random.default_rng(8)
    hf.DatasetDict(train=_split(hf, _images(9, 24, shape=(6, 6)), rng.integers(0, 5, 24)),
                   test=_split(hf, _images(10, 6, shape=(6, 6)), rng.integers(0, 5, 6))
                   ).save_to_disk(str(tmp_path / "tiny"))
    from jaxcurv.cli import main

    out = tmp_path / "curvature.csv"
    assert main(["curvature", "--dataset", f"hf:{tmp_path / 'tiny'}", "--model", "mlp",
                 "--epochs", "1", "--num-probes", "2", "--out", str(out), "--quiet"]) == 0
    assert len(out.read_text().strip().splitlines()) == 1 + 24


def test_datasets_is_imported_only_when_a_folder_is_loaded():
    import os
    import subprocess
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    code = "import sys, jaxcurv.data, jaxcurv.workflow; print('datasets' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONPATH=root))
    assert out.stdout.strip() == "False"
