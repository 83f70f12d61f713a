"""Names shared by the primitives and the workflow, declared once (jax-free, so the command
line's help can list them without importing jax)."""

from __future__ import annotations

__all__ = ["OPTIMIZERS", "GNR_HVPS", "CURVATURE_METHODS", "ZERO_ORDER_METHODS", "ACCOUNTANTS",
           "DATASET_SPECS", "QUANTITIES", "QUALIFIERS", "STATISTICS", "quantity_label"]

OPTIMIZERS = ("sgd", "adam", "rmsprop", "sam", "sam-gnr")
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


QUANTITIES: dict[str, str] = {
    "curvature": "curvature tr(H²)",
    "curvature_trace": "curvature tr(H)",
    "zero_order": "zero-order curvature |uᵀHv|",
    "mem": "memorization score",
    "loss": "loss",
    "confidence": "confidence p_y",
    "learning_time": "learning time",
    "inverse_learning_time": "1 / learning time",
    "adversarial_distance": "L2 adversarial distance",
}
"""One name per per-example quantity: the column, JSON key and file-name stem (left) and the axis
label (right) of every output. tr(H²) = ‖H‖_F² of the input-loss Hessian, the papers' Curv, is
``curvature``; tr(H) is ``curvature_trace``; nothing else is called curvature."""

QUALIFIERS: dict[str, str] = {
    "in": "IN members", "out": "OUT members", "all": "all members",
    "train": "over training", "test": "test images", "stderr": "standard error",
    "lower": "lower 95 % bound",
    "mean": "mean", "median": "median", "sd": "sd", "max": "maximum",
    "lo": "95 % interval, lower end", "hi": "95 % interval, upper end",
}
"""Suffixes a quantity's name may carry (``curvature_out``, ``curvature_trace_in_median``…), with
their words in a label; ``curvature_train_in`` is tr(H²) averaged over training, IN members."""


STATISTICS = ("mean", "median", "max", "min")
"""Prefixes of a summary over examples or models (``mean_curvature``, ``median_curvature``)."""


def quantity_label(name: str) -> str:
    """The axis label of a quantity's column name: an optional STATISTICS prefix, the longest
    QUANTITIES stem, then its qualifiers in parentheses (``curvature_trace_out`` → "curvature
    tr(H) (OUT members)", ``mean_curvature_lo`` → "mean curvature tr(H²) (95 % interval, lower
    end)"). Raises KeyError for a name that is not a quantity followed by qualifiers."""
    prefix, _, rest = name.partition("_")
    if prefix in STATISTICS and rest:
        try:
            return f"{prefix} {quantity_label(rest)}"
        except KeyError:
            pass  # not a statistic of a quantity: reported below under its full name
    stems = sorted((q for q in QUANTITIES if name == q or name.startswith(q + "_")),
                   key=len, reverse=True)
    for stem in stems:
        rest = [part for part in name[len(stem):].split("_") if part]
        if all(part in QUALIFIERS for part in rest):
            words = ", ".join(QUALIFIERS[part] for part in rest)
            return QUANTITIES[stem] + (f" ({words})" if words else "")
    raise KeyError(f"{name!r} is not a quantity name: a QUANTITIES stem ({', '.join(QUANTITIES)}) "
                   f"followed by _qualifiers ({', '.join(QUALIFIERS)})")
