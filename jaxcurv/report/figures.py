"""Figures, one function per figure (matplotlib, Agg; nothing touches the global pyplot state).

Every ``figure_*`` function takes arrays and a path, writes one PNG and returns the path; the CLI
and the experiment scripts share them. Figure numbers refer to "Unveiling Privacy, Memorization,
and Input Curvature Links" (ICML 2024) unless another paper is named.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

from jaxcurv._names import quantity_label
from jaxcurv.report._style import (_axis_label, _axis_scale, _bin_edges, _finite, _image_grid,
                                   _save, _set_scale, _show_image, _spearman, _styled, _subplots)

__all__ = [
    "figure_top_ranked",
    "figure_extreme_images",
    "figure_top_memorized",
    "figure_curvature_histogram",
    "figure_mem_vs_curvature",
    "figure_proxies_vs_mem",
    "figure_trace_vs_trace_sq",
    "figure_roc",
    "figure_mia_vs_mem",
    "figure_bound_fit",
    "figure_binned_bound_fits",
    "figure_label_noise",
    "figure_privacy_bounds",
    "figure_mem_vs_epsilon",
    "figure_curve_vs_epsilon",
    "figure_series_vs_epsilon",
    "figure_gain_by_mem",
    "figure_distributions",
    "figure_frontier",
]

@_styled
def figure_extreme_images(images, labels, scores, path, *, k: int = 16, class_names=None,
                          quantity: str = "curvature", value_label: str | None = None) -> Path:
    """Figure 2: the k lowest- and k highest-``score`` images, each titled with its label and its
    score; ``quantity`` names the score (a column name of :data:`jaxcurv._names.QUANTITIES`, e.g.
    "curvature_in"), ``value_label`` the short text above each image (default: its label)."""
    score_name = quantity_label(quantity)
    scores = np.asarray(scores, float)
    order = np.argsort(np.where(np.isfinite(scores), scores, np.nan))
    finite = order[np.isfinite(scores[order])]
    k = min(k, len(finite) // 2) or 1
    groups = [("lowest", finite[:k]), ("highest", finite[::-1][:k])]
    cols = min(8, k)
    rows = math.ceil(k / cols)
    value_label = value_label or score_name
    fig, axes = _subplots(2 * rows, cols, figsize=(1.3 * cols, 3.0 * rows + 0.6),
                          squeeze=False)
    for g, (name, idx) in enumerate(groups):
        for j in range(rows * cols):
            ax = axes[g * rows + j // cols, j % cols]
            if j >= len(idx):
                ax.axis("off")
                continue
            i = idx[j]
            _show_image(ax, images[i])
            label = class_names[labels[i]] if class_names is not None else labels[i]
            ax.set_title(f"label {label}\n{value_label} {scores[i]:.3g}", fontsize=6.5)
        axes[g * rows, 0].set_ylabel(f"{score_name}: {name}", fontsize=8)
    fig.suptitle(f"{k} lowest (top) and highest (bottom) {score_name} training examples\n"
                 f"above each image: its label and its {value_label}", fontsize=9)
    return _save(fig, path)


@_styled
def figure_top_memorized(images, labels, mem, path, *, order=None, k: int = 16,
                         class_names=None, true_labels=None) -> Path:
    """The k most memorized training images: ``order`` (indices, most memorized first; default:
    ``mem`` (N,) descending) titled with the given label and the memorization score; with
    ``true_labels``, a flipped label (given ≠ true) in red with its true label."""
    mem = np.asarray(mem, float)
    if order is None:
        order = np.argsort(np.where(np.isfinite(mem), -mem, np.inf), kind="stable")
    order = np.asarray(order, int)[:k]
    name = (lambda c: class_names[c]) if class_names is not None else str
    red = [true_labels is not None and labels[i] != true_labels[i] for i in order]
    titles = [f"label {name(labels[i])}" + (f" (true {name(true_labels[i])})" if r else "")
              + f"\nmem {mem[i]:.2f}" for i, r in zip(order, red)]
    return _image_grid(images, order, titles, red, path,
                       f"The {len(order)} most memorized training examples\nabove each image: "
                       "its given label and its memorization score (Feldman–Zhang)")


@_styled
def figure_curvature_histogram(curvature, correct, path, *, quantity: str = "curvature",
                               min_group: int = 20) -> Path:
    """Curvature of correctly vs incorrectly classified examples: the fraction of each group per
    bin, bins evenly spaced on a log axis (positive values over several decades), a symmetric-log
    axis (signed values with a heavy tail) or a linear one; a group of fewer than ``min_group``
    examples is drawn as one marker per example, not as a histogram; an empty group is left out
    (no "n=0" legend entry). ``quantity``: the column name of what ``curvature`` holds (its axis
    label comes from :data:`jaxcurv._names.QUANTITIES`)."""
    name = quantity_label(quantity)
    curvature = np.asarray(curvature, float)
    correct = np.asarray(correct) >= 0.5
    ok = np.isfinite(curvature)
    fig, ax = _subplots(figsize=(5.4, 3.5))
    scale, options = _axis_scale(curvature[ok])
    edges = _bin_edges(curvature[ok], scale, options) if ok.any() else np.linspace(0, 1, 41)
    for mask, label, color in [(correct, "correct", "tab:blue"),
                               (~correct, "misclassified", "tab:red")]:
        group = curvature[mask & ok]
        if not len(group):
            continue
        if len(group) >= min_group:
            ax.hist(group, bins=edges, weights=np.full(len(group), 1 / len(group)), alpha=0.6,
                    color=color, label=f"{label} (n={len(group)})")
        else:
            ax.plot(group, np.full(len(group), 0.96), "v", ms=6, color=color,
                    transform=ax.get_xaxis_transform(), clip_on=False,
                    label=f"{label} (n={len(group)}, one ▼ each)")
    _set_scale(ax, "x", scale, options, curvature[ok])
    ax.set_xlabel(_axis_label(name, scale, curvature[ok]))
    ax.set_ylabel("fraction of the group per bin")
    ax.legend(fontsize=7)
    ax.set_title("Input-loss curvature by classification outcome")
    return _save(fig, path)


@_styled
def figure_mem_vs_curvature(mem, curvature, path, *, top: int | None = None,
                            quantity: str = "curvature", rho: float | None = None) -> Path:
    """Figure 3: Feldman–Zhang memorization against curvature (optionally the ``top`` most
    memorized) with the Spearman correlation: ``rho`` when given (e.g. the summary's, so both
    agree), else computed over the examples where both are finite. ``quantity``: the column name
    of what ``curvature`` holds ("curvature_in", "curvature_out"…)."""
    name = quantity_label(quantity)
    mem, curvature = _finite(mem, curvature)
    if top:
        idx = np.argsort(mem)[::-1][:top]
        mem, curvature = mem[idx], curvature[idx]
    rho = _spearman(mem, curvature) if rho is None else float(rho)
    fig, ax = _subplots(figsize=(5.0, 3.7))
    ax.scatter(curvature, mem, s=6, alpha=0.5)
    scale, options = _axis_scale(curvature)
    _set_scale(ax, "x", scale, options, curvature)
    ax.set_xlabel(_axis_label(name, scale, curvature))
    ax.set_ylabel("memorization score (FZ)")
    suffix = f" (top {top})" if top else ""
    ax.set_title(f"Memorization vs curvature{suffix}: Spearman ρ = {rho:.3f}")
    return _save(fig, path)


@_styled
def figure_proxies_vs_mem(mem, proxies: Mapping[str, Any], path, *,
                          labels: Mapping[str, str] | None = None) -> Path:
    """Figures 10–13: each memorization proxy against mem, Spearman ρ per panel; heavy-tailed
    proxies on a log (or, signed, symmetric-log) x axis. ``labels``: axis labels by proxy name
    (default: the quantity's label, :func:`jaxcurv._names.quantity_label`, else the name)."""
    names = [n for n, v in proxies.items() if v is not None and np.isfinite(v).any()]
    labels = dict(labels or {})
    cols = min(3, len(names)) or 1
    rows = math.ceil(len(names) / cols) or 1
    fig, axes = _subplots(rows, cols, figsize=(3.5 * cols, 2.9 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        x, m = _finite(proxies[name], mem)
        ax.scatter(x, m, s=4, alpha=0.4)
        scale, options = _axis_scale(x)
        _set_scale(ax, "x", scale, options, x)
        ax.set_xlabel(_axis_label(labels.get(name) or _label_or_name(name), scale, x))
        ax.set_ylabel("memorization score")
        ax.set_title(f"ρ = {_spearman(x, m):.3f}")
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle("Memorization proxies against memorization (Spearman ρ per panel)")
    return _save(fig, path)


@_styled
def figure_trace_vs_trace_sq(trace, trace_sq, mem, path, *, group: str = "in") -> Path:
    """Figures 14–16: tr(H) against tr(H²) = ‖H‖_F² per example, coloured by memorization; both
    axes logarithmic when either is heavy-tailed (tr(H) symmetric-log when over 5 % of it is
    ≤ 0), else both linear. ``group``: whose mean the values are (a QUALIFIERS key, "" for none)."""
    suffix = f"_{group}" if group else ""
    trace, trace_sq, mem = _finite(trace, trace_sq, mem)
    fig, ax = _subplots(figsize=(5.4, 3.9))
    order = np.argsort(mem)  # the most memorized drawn last, on top
    sc = ax.scatter(trace[order], trace_sq[order], c=mem[order], s=6, cmap="viridis", alpha=0.8)
    fig.colorbar(sc, ax=ax, label="memorization score")
    heavy = any(_axis_scale(v)[0] != "linear" for v in (trace, trace_sq))
    for axis, values, name in (("x", trace, quantity_label("curvature_trace" + suffix)),
                               ("y", trace_sq, quantity_label("curvature" + suffix))):
        scale, options = _axis_scale(values, logarithmic=heavy)
        _set_scale(ax, axis, scale, options, values)
        getattr(ax, f"set_{axis}label")(_axis_label(name, scale, values))
    ax.set_title(f"Spearman ρ = {_spearman(trace, trace_sq):.3f}")
    return _save(fig, path)


def _label_or_name(name: str) -> str:
    try:
        return quantity_label(name)
    except KeyError:  # a proxy of the caller's own
        return name


def _roc_steps(fpr: np.ndarray, tpr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (x, y) of the empirical ROC as a step function of FPR > 0, from achievable points
    (fpr_j, tpr_j) sorted by threshold (``mia.roc_curve``): y(x) = max {tpr_j : fpr_j ≤ x},
    horizontal from (f_j, t_j) to (f_{j+1}, t_j), then vertical to (f_{j+1}, t_{j+1}); the first
    vertex is the smallest FPR above 0 (with the largest TPR reached there)."""
    fpr, tpr = np.asarray(fpr, float), np.asarray(tpr, float)
    keep = fpr > 0
    f, t = fpr[keep], np.maximum.accumulate(tpr)[keep]
    last = np.append(f[1:] != f[:-1], True)  # one point per FPR: the highest TPR at it
    f, t = f[last], t[last]
    return np.repeat(f, 2)[1:], np.repeat(t, 2)[:-1]


@_styled
def figure_roc(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path, *,
               aurocs: Mapping[str, float] | None = None, title: str = "Membership inference") -> Path:
    """ROC curves on log-log axes (the LiRA convention), one line per attack.

    Each curve is the empirical ROC of thresholds "member iff score ≥ t" drawn as a step
    function: at FPR x it shows the largest TPR of a threshold whose FPR ≤ x — the tables' "TPR
    at FPR ≤ x". Scores tied across members and non-members are one achievable point each side
    of the tie: the curve stays flat until the FPR where the tie is crossed and jumps vertically
    there (no chord through the tie, which only a randomized threshold would reach). FPR = 0
    has no place on a log axis: a curve starts at its smallest achievable FPR above 0 (the
    non-members tied at the top non-member score), so nothing is drawn below the FPR the scores
    can resolve. TPR = 0 is drawn at 1e-5, below the axis. ``curves``: name → (fpr, tpr) from
    ``mia.roc_curve``."""
    fig, ax = _subplots(figsize=(4.8, 4.2))
    colors = matplotlib.colormaps["tab20" if len(curves) > 10 else "tab10"].colors
    for i, (name, (fpr, tpr)) in enumerate(curves.items()):
        label = name if aurocs is None else f"{name} (AUC {aurocs[name]:.3f})"
        x, y = _roc_steps(fpr, tpr)
        ax.plot(x, np.maximum(y, 1e-5), label=label, lw=1.2,
                color=colors[i % len(colors)], ls="-" if i < 10 else "--")
    ax.plot([1e-5, 1], [1e-5, 1], "k--", lw=0.8, label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(1e-4, 1)
    ax.set_ylim(1e-4, 1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(fontsize=6, loc="lower right")
    return _save(fig, path)


@_styled
def figure_mia_vs_mem(tables, path, *, title: str = "") -> Path:
    """Figure 9: per memorization bin, attack AUROC, attack balanced accuracy and the in-member
    train accuracy. ``tables``: the rows of ``pipeline.mia_by_memorization`` for one attack, or a
    dict attack name → rows (one panel per attack)."""
    if not isinstance(tables, Mapping):
        tables = {"": tables}
    fig, axes = _subplots(1, len(tables), figsize=(3.8 * len(tables) + 0.6, 3.4),
                             squeeze=False, sharey=True)
    for ax, (attack, rows) in zip(axes[0], tables.items()):
        centers = [row["mem_center"] for row in rows]
        for key, label in [("auroc", "attack AUROC"), ("balanced_accuracy", "attack balanced acc."),
                           ("train_accuracy", "train accuracy (in)")]:
            ax.plot(centers, [row[key] for row in rows], marker="o", label=label)
        ax.axhline(0.5, color="k", lw=0.6, ls=":")
        ax.set_xlabel("memorization score (bin mean)")
        ax.set_ylim(0.0, 1.02)
        if attack:
            ax.set_title(attack)
    axes[0, 0].set_ylabel("value")
    axes[0, 0].legend(fontsize=7, loc="lower right")
    fig.suptitle(title or "Membership inference success by memorization")
    return _save(fig, path)


@_styled
def figure_bound_fit(curvature, mem, bin_curvature, bin_mem, p1: float, c1: float, m_sub: float,
                     r2: float, path, *, bin_label: str = "bins",
                     quantity: str = "curvature_in") -> Path:
    """Eq. 15: per-example (curvature, mem), the binned points of the fit, and the fitted line
    mem = p₁·√m_sub·Curv + c₁ (m_sub: its mean over the bins). ``quantity``: the column name of
    what ``curvature`` holds ("curvature_out" for Thm 5.1's S\\i, "curvature_all" for §6.3)."""
    curvature, mem = np.asarray(curvature, float), np.asarray(mem, float)
    ok = np.isfinite(curvature) & np.isfinite(mem)
    fig, ax = _subplots(figsize=(5.0, 3.7))
    ax.scatter(curvature[ok], mem[ok], s=4, alpha=0.25, color="tab:gray", label="examples")
    ax.scatter(bin_curvature, bin_mem, s=18, color="tab:blue", label=bin_label, zorder=3)
    x = np.linspace(min(float(curvature[ok].min()), 0.0), float(curvature[ok].max()), 200)
    ax.plot(x, p1 * np.sqrt(m_sub) * x + c1, "r--", zorder=4,
            label=f"p₁√m_sub·Curv + c₁ (p₁={p1:.3g}, c₁={c1:.3g}, R²={r2:.3f})")
    ax.set_xlabel(quantity_label(quantity))
    ax.set_ylabel("memorization score (FZ)")
    ax.set_title("Eq. 15: memorization vs curvature fit")
    ax.legend(fontsize=7, loc="upper left")
    return _save(fig, path)


@_styled
def figure_label_noise(scores: Mapping[str, Any], flipped, path) -> Path:
    """Precision–recall of finding flipped labels by ranking each score from high to low; the
    legend (with each score's average precision) sits beside the axes, off the data."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    flipped = np.asarray(flipped, bool)
    fig, ax = _subplots(figsize=(6.6, 3.6))
    for name, score in scores.items():
        s = np.nan_to_num(np.asarray(score, float), nan=-np.inf)
        s = np.nan_to_num(s, posinf=np.finfo(float).max, neginf=-np.finfo(float).max)
        precision, recall, _ = precision_recall_curve(flipped, s)
        ax.plot(recall, precision, label=f"{name} (AP {average_precision_score(flipped, s):.2f})")
    ax.axhline(flipped.mean(), color="k", ls="--", lw=0.8, label="random")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall of flipped labels")
    ax.set_ylabel("precision")
    ax.set_title("Finding mislabeled examples")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    return _save(fig, path)


@_styled
def figure_top_ranked(images, labels, true_labels, scores, path, *, k: int = 16,
                      score_name: str = "score", class_names=None) -> Path:
    """The k training images ranked highest by ``scores`` (N,), each titled with its given and
    true label; flipped labels (given ≠ true) in red."""
    scores = np.asarray(scores, float)
    order = np.argsort(np.where(np.isfinite(scores), -scores, np.inf), kind="stable")[:k]
    name = (lambda c: class_names[c]) if class_names is not None else str
    titles = [f"given {name(labels[i])}\ntrue {name(true_labels[i])}" for i in order]
    red = [labels[i] != true_labels[i] for i in order]
    return _image_grid(images, order, titles, red, path,
                       f"{len(order)} highest {score_name}: {sum(red)} flipped (red)")


@_styled
def figure_privacy_bounds(mem, curvature, epsilon: float, path, *, loss_bound: float | None = None,
                          num_examples: int | None = None, quantity: str = "curvature") -> Path:
    """Memorization against its DP bound 1 − e^{−ε} (Thm 5.4) and curvature against Thm 5.3's
    bound L(m+1)(1 − e^{−ε}) on its mean; curvature on a log axis that reaches the bound."""
    fig, axes = _subplots(1, 2, figsize=(9.6, 3.5))
    mem = np.asarray(mem, float)
    mem = mem[np.isfinite(mem)]
    bound = 1 - math.exp(-epsilon)
    axes[0].hist(mem, bins=40, color="tab:blue", alpha=0.8)
    axes[0].axvline(bound, color="tab:red", label=f"bound 1 − e^(−ε) = {bound:.3f}")
    axes[0].set_xlabel("memorization score")
    axes[0].set_ylabel("training examples")
    axes[0].set_title(f"mem under ε = {epsilon:.3g}: {np.mean(mem > bound):.1%} above the bound")
    axes[0].legend(fontsize=7)
    curvature = np.asarray(curvature, float)
    curvature = curvature[np.isfinite(curvature)]
    cb = (loss_bound * (num_examples + 1) * (1 - math.exp(-epsilon))
          if loss_bound is not None and num_examples is not None else None)
    positive = len(curvature) and (curvature > 0).all()
    span = np.append(curvature, cb) if cb is not None and cb > 0 else curvature
    edges = np.geomspace(span.min(), span.max(), 50) if positive else 50
    axes[1].hist(curvature, bins=edges, color="tab:green", alpha=0.8)
    if positive:
        _set_scale(axes[1], "x", "log", {})
    mean = curvature.mean()
    axes[1].axvline(mean, color="k", ls="--", lw=0.8, label=f"mean {mean:.3g}")
    if cb is not None:
        axes[1].axvline(cb, color="tab:red", label=f"Thm 5.3 bound L(m+1)(1−e^(−ε)) = {cb:.3g}")
    axes[1].legend(fontsize=7)
    axes[1].set_xlabel(quantity_label(quantity) + (" (log scale)" if positive else ""))
    axes[1].set_ylabel("training examples")
    axes[1].set_title("curvature and its bound" if cb is None else
                      f"mean curvature is {mean / cb:.2g} × its bound")
    return _save(fig, path)


@_styled
def figure_mem_vs_epsilon(epsilons, mem_values, path, *, label: str = "top memorized") -> Path:
    """Figure 6: memorization of the most memorized examples against ε (semi-log x) with the
    bound 1 − e^{−ε}; ``mem_values`` is (E,) or (E, seeds)."""
    eps = np.asarray(epsilons, float)
    values = np.atleast_2d(np.asarray(mem_values, float).T).T
    mean = np.nanmean(values, axis=1)
    err = np.nanstd(values, axis=1) / np.sqrt(np.maximum(np.sum(np.isfinite(values), 1), 1))
    grid = np.geomspace(max(eps[np.isfinite(eps)].min() / 2, 1e-2), eps[np.isfinite(eps)].max() * 2,
                        200)
    fig, ax = _subplots(figsize=(4.8, 3.5))
    ax.errorbar(eps, mean, yerr=err, marker="o", capsize=3, label=label)
    ax.plot(grid, 1 - np.exp(-grid), "r--", label="bound 1 − e^(−ε)")
    ax.set_xscale("log")
    ax.set_xlabel("privacy budget ε")
    ax.set_ylabel("memorization score")
    ax.set_title("Memorization vs privacy")
    ax.legend()
    return _save(fig, path)


@_styled
def figure_curve_vs_epsilon(epsilons, values, path, *, fit: tuple[np.ndarray, np.ndarray] | None = None,
                            ylabel: str = "curvature", fit_label: str = "fit",
                            title: str = "") -> Path:
    """Figures 4, 5, 16: a quantity (E,) or (E, seeds) against ε with an optional fitted curve."""
    eps = np.asarray(epsilons, float)
    v = np.atleast_2d(np.asarray(values, float).T).T
    mean = np.nanmean(v, axis=1)
    err = np.nanstd(v, axis=1) / np.sqrt(np.maximum(np.sum(np.isfinite(v), 1), 1))
    fig, ax = _subplots(figsize=(4.8, 3.5))
    ax.errorbar(eps, mean, yerr=err, marker="o", capsize=3, label="measured")
    if fit is not None:
        ax.plot(fit[0], fit[1], "r--", label=fit_label)
    ax.set_xscale("log")
    ax.set_xlabel("privacy budget ε")
    ax.set_ylabel(ylabel)
    ax.set_title(title or f"{ylabel} vs privacy")
    ax.legend()
    return _save(fig, path)


@_styled
def figure_gain_by_mem(table: Sequence[Mapping[str, float]], path, *,
                       ylabel: str = "accuracy gain of SAM over SGD") -> Path:
    """Per memorization bin, a gain with its confidence interval (SAM vs SGD study)."""
    centers = np.array([row["mem_center"] for row in table])
    gain = np.array([row["gain"] for row in table])
    lo = np.array([row["gain_lo"] for row in table])
    hi = np.array([row["gain_hi"] for row in table])
    fig, ax = _subplots(figsize=(5, 3.4))
    ax.bar(centers, gain, width=0.8 * np.min(np.diff(centers)) if len(centers) > 1 else 0.1,
           yerr=[gain - lo, hi - gain], capsize=3, color="tab:purple", alpha=0.8)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xlabel("memorization score (bin centre)")
    ax.set_ylabel(ylabel)
    ax.set_title("Where the gain goes")
    return _save(fig, path)


@_styled
def figure_distributions(samples: Mapping[str, Any], path, *, xlabel: str, log: bool = True,
                         title: str = "") -> Path:
    """Overlaid histograms of one quantity under several conditions (e.g. SGD vs SAM)."""
    fig, ax = _subplots(figsize=(4.8, 3.4))
    arrays = {k: np.asarray(v, float)[np.isfinite(np.asarray(v, float))] for k, v in samples.items()}
    medians = {k: float(np.median(v)) if len(v) else float("nan") for k, v in arrays.items()}
    if log:
        arrays = {k: np.log10(v[v > 0]) for k, v in arrays.items()}
    allv = np.concatenate([v for v in arrays.values() if len(v)]) if arrays else np.zeros(1)
    bins = np.histogram_bin_edges(allv, bins=40)
    for name, v in arrays.items():
        ax.hist(v, bins=bins, alpha=0.55, density=True,
                label=f"{name} (median {medians[name]:.3g})")
    ax.set_xlabel(f"log10 {xlabel}" if log else xlabel)
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend()
    return _save(fig, path)


@_styled
def figure_frontier(points: Sequence[Mapping[str, Any]], path, *,
                    metrics: Sequence[tuple[str, str]] = (("auroc", "attack AUROC"),
                                                          ("tpr_at_fpr_0_1pct",
                                                           "attack TPR at 0.1 % FPR")),
                    title: str = "Privacy–utility frontier") -> Path:
    """Attack power against test accuracy, one panel per metric (SAM paper's frontier study).

    ``points``: one mapping per trained ensemble with "family" (points of a family are joined in
    the given order, e.g. DP-SGD by ε), "label", "test_accuracy" and each metric key, and
    optionally "<key>_ci" / "test_accuracy_ci" as (lo, hi) for error bars.
    """

    def errors(rows, key, center):  # (2, n) distances to the "<key>_ci" bounds, None without
        cis = [row.get(f"{key}_ci") for row in rows]
        if any(ci is None for ci in cis):
            return None
        lo, hi = np.array([[float(c[0]), float(c[1])] for c in cis], float).T
        return np.maximum(np.stack([center - lo, hi - center]), 0.0)

    fig, axes = _subplots(1, len(metrics), figsize=(4.6 * len(metrics), 3.9), squeeze=False)
    families = list(dict.fromkeys(str(p["family"]) for p in points))
    colors = matplotlib.colormaps["tab10"].colors
    markers = "osD^vP*X"
    for ax, (key, label) in zip(axes[0], metrics):
        for f, family in enumerate(families):
            rows = [p for p in points if str(p["family"]) == family]
            x = np.array([float(p["test_accuracy"]) for p in rows])
            y = np.array([float(p[key]) for p in rows])
            xerr = errors(rows, "test_accuracy", x)
            yerr = errors(rows, key, y)
            ax.errorbar(x, y, xerr=xerr, yerr=yerr, marker=markers[f % len(markers)],
                        color=colors[f % len(colors)], capsize=2, lw=1, ms=5, label=family)
            for p, xi, yi in zip(rows, x, y):
                if len(rows) > 1:
                    ax.annotate(str(p["label"]), (xi, yi), fontsize=6, xytext=(3, 3),
                                textcoords="offset points")
        chance = {"auroc": 0.5, "tpr_at_fpr_0_1pct": 0.001, "tpr_at_fpr_1pct": 0.01}.get(key)
        if chance is not None:
            ax.axhline(chance, color="k", lw=0.6, ls=":", label="chance")
        ax.set_xlabel("test accuracy")
        ax.set_ylabel(label)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(title)
    return _save(fig, path)


@_styled
def figure_series_vs_epsilon(epsilons, series: Mapping[str, Any], path, *,
                             fits: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
                             references: Mapping[str, Any] | None = None, ylabel: str,
                             title: str = "", logy: bool = False) -> Path:
    """Figures 4–6 with training randomness shown: each named series (E, seeds) against ε (log
    x), every seed as a dot and the mean over seeds as a line; ``fits``: label → (grid, values)
    dashed; ``references``: label → a value or (seeds,) values drawn as horizontal bands (mean
    ± range), e.g. the untrained and the non-private networks."""
    eps = np.asarray(epsilons, float)
    fig, ax = _subplots(figsize=(5.2, 3.7))
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, values) in enumerate(series.items()):
        v = np.atleast_2d(np.asarray(values, float).T).T
        color = colors[i % len(colors)]
        for j in range(v.shape[1]):
            ax.plot(eps, v[:, j], "o", ms=3, alpha=0.45, color=color)
        ax.plot(eps, np.nanmean(v, axis=1), "-", color=color, label=f"{label} (mean of "
                f"{v.shape[1]} seeds)")
    for i, (label, (grid, values)) in enumerate((fits or {}).items()):
        ax.plot(grid, values, "--", color=colors[i % len(colors)], lw=1.2, label=label)
    for i, (label, value) in enumerate((references or {}).items()):
        v = np.atleast_1d(np.asarray(value, float))
        color = ("k", "tab:gray", "tab:brown")[i % 3]
        ax.axhline(float(np.nanmean(v)), color=color, ls=":", lw=1.2, label=label)
        if v.size > 1:
            ax.axhspan(float(np.nanmin(v)), float(np.nanmax(v)), color=color, alpha=0.08)
    ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("privacy budget ε")
    ax.set_ylabel(ylabel)
    ax.set_title(title or f"{ylabel} vs privacy")
    ax.legend(fontsize=6.5)
    return _save(fig, path)


@_styled
def figure_binned_bound_fits(panels: Mapping[str, Mapping[str, Any]], path, *,
                             xlabel: str = "curvature tr(H²)") -> Path:
    """Figure 3 as the paper computes it, one panel per curvature source: every example
    (curvature, mem) in grey, each memorization bin's maximum curvature against its mean mem,
    and the eq. 15 fit p₁·√m_sub·Curv + c₁ at the bins (m_sub per bin). ``panels``: title →
    {"curvature", "mem" (N,), "bin_curvature", "bin_mem", "fitted" (B,), "r2", "p1", "c1"}."""
    fig, axes = _subplots(1, len(panels), figsize=(4.3 * len(panels), 3.7), squeeze=False)
    for ax, (title, p) in zip(axes[0], panels.items()):
        curv, mem = np.asarray(p["curvature"], float), np.asarray(p["mem"], float)
        ok = np.isfinite(curv) & np.isfinite(mem) & (curv > 0)
        ax.scatter(curv[ok], mem[ok], s=3, alpha=0.15, color="tab:gray", label="examples")
        order = np.argsort(p["bin_curvature"])
        bx = np.asarray(p["bin_curvature"], float)[order]
        ax.scatter(bx, np.asarray(p["bin_mem"], float)[order], s=16, color="tab:blue",
                   zorder=3, label="bins: max curvature, mean mem")
        ax.plot(bx, np.asarray(p["fitted"], float)[order], "r.--", ms=4, lw=1, zorder=4,
                label=f"eq. 15 fit (p₁={p['p1']:.3g}, c₁={p['c1']:.3g}, R²={p['r2']:.3f})")
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("memorization score (FZ)")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=6, loc="upper left")
    return _save(fig, path)
