"""Names shared by the primitives and the workflow, declared once (jax-free, so the command
line's help can list them without importing jax)."""

from __future__ import annotations

__all__ = ["OPTIMIZERS", "GNR_HVPS", "CURVATURE_METHODS", "ZERO_ORDER_METHODS", "ACCOUNTANTS",
           "DATASET_SPECS"]

OPTIMIZERS = ("sgd", "adam", "sam", "sam-gnr")
GNR_HVPS = ("exact", "finite_difference")
CURVATURE_METHODS = ("hutchinson", "exact", "finite_difference")
ZERO_ORDER_METHODS = ("central", "mixed")
ACCOUNTANTS = ("rdp", "pld", "rdp_classic")

DATASET_SPECS: tuple[tuple[str, str], ...] = (
    ("digits", "scikit-learn's 8x8 digits, embedded, no network"),
    ("cifar10", "CIFAR-10 files in --data-dir or $JAXCURV_DATA_DIR, else tensorflow-datasets"),
    ("cifar100", "CIFAR-100 (fine labels), found like cifar10"),
    ("tfds:<name>", "any prepared image-classification TFDS dataset, e.g. tfds:mnist"),
    ("npz:<path>", "keys images/labels, {split}_images/{split}_labels, or the JPEG layout "
                   "{split}_jpeg/{split}_offsets/{split}_labels"),
    ("hf:<folder>", "a folder written by Hugging Face datasets' save_to_disk: one image and one "
                    "ClassLabel column, splits train/test (needs jaxcurv[hf])"),
)
"""Every dataset name ``load`` accepts, as (spec, one-line description) pairs."""
