"""Datasets, LiRA-style subset masks, label noise and pure-JAX augmentation.

Every loader returns a :class:`Dataset`: images (N, H, W, C) float32 in [0, 1] (uint8 sources are
divided by 255), labels (N,) int32 in [0, num_classes). ``load(name, split=..., data_dir=...)``
accepts:

- ``"digits"``: scikit-learn's bundled 8×8 digits (1,797 images, pixel/16), no network;
  deterministic stratified split, per class round(0.2·n_c) test images (seed 0):
  1,438 train / 359 test.
- ``"cifar10"`` / ``"cifar100"`` (fine labels): local files found by :func:`locate` in
  ``data_dir``, then in ``$JAXCURV_DATA_DIR`` (the official python-version folder or archive, or
  ``cifar10.npz`` / ``cifar10-jpeg.npz`` / ``cifar100.npz``), else tensorflow-datasets'
  random-access ``tfds.data_source`` (array_record files read as numpy; TensorFlow not needed to
  read).
- ``"tfds:<name>"``: any image-classification TFDS dataset that is already prepared.
- ``"npz:<path>"``: keys ``images``/``labels``, ``{split}_images``/``{split}_labels``, or the JPEG
  layout ``{split}_jpeg``/``{split}_offsets``/``{split}_labels`` (decoded once, cached as uint8
  under ``$JAXCURV_CACHE_DIR``, default ``~/.cache/jaxcurv``).
- ``"hf:<folder>"``: a folder written by Hugging Face ``datasets``' ``save_to_disk`` (an image and a
  ClassLabel column; a DatasetDict's splits), read offline; needs ``pip install 'jaxcurv[hf]'``.

``DATASET_SPECS`` lists these forms with one-line descriptions (what the command line shows).

Package map:

- ``dataset``: :class:`Dataset` (validation, read-only arrays, ``from_arrays``, ``take``).
- ``loading``: ``load`` and ``train_test``, the name → source dispatch.
- ``digits``: the embedded digits data and its fixed split.
- ``cifar``: ``locate`` and the official CIFAR files, archives and npz copies.
- ``tfds``: tensorflow-datasets, imported lazily.
- ``hf``: Hugging Face ``datasets`` folders, imported lazily.
- ``npz``: the npz layouts, the JPEG layout and its decoded-array cache (``cache_dir``).
- ``subsets``: ``subset_masks`` and ``add_label_noise``.
- ``augmentation``: ``random_crop``, ``random_flip``, ``augment``, ``augment_batch`` (pure JAX,
  static shapes: usable inside ``jit`` and ``vmap`` with one key per member and per image),
  ``channel_stats`` and ``normalize``.
"""

from jaxcurv.data.augmentation import (
    PAD_MODES,
    augment,
    augment_batch,
    channel_stats,
    normalize,
    random_crop,
    random_flip,
)
from jaxcurv.data.cifar import DATA_DIR_ENV, locate
from jaxcurv.data.dataset import Dataset
from jaxcurv.data.digits import DIGITS_SPLIT_SEED, DIGITS_TEST_FRACTION
from jaxcurv.data.loading import DATASET_SPECS, load, train_test
from jaxcurv.data.npz import cache_dir
from jaxcurv.data.subsets import add_label_noise, random_subset, subset_masks

__all__ = [
    "Dataset",
    "load",
    "train_test",
    "DATASET_SPECS",
    "locate",
    "DATA_DIR_ENV",
    "subset_masks",
    "add_label_noise",
    "random_subset",
    "random_crop",
    "random_flip",
    "augment",
    "augment_batch",
    "channel_stats",
    "normalize",
    "cache_dir",
    "DIGITS_TEST_FRACTION",
    "DIGITS_SPLIT_SEED",
    "PAD_MODES",
]
