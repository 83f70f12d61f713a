"""Shared figure style and axis helpers: the rc style applied per figure, axis scales that suit
heavy-tailed scores, bin edges on those scales, image tiles. Private to ``jaxcurv.report``."""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.scale import SymmetricalLogTransform
from matplotlib.ticker import FixedLocator, LogLocator, NullLocator
from scipy import stats

__all__: list[str] = []

_DPI = 150
# Applied per figure (rc_context), never to the user's global matplotlib state; figures are
# matplotlib.figure.Figure objects written with Agg, so no pyplot backend is selected or needed.
_STYLE = {"font.size": 9, "axes.titlesize": 10, "axes.grid": True, "grid.alpha": 0.3,
          "figure.constrained_layout.use": True}


def _styled(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(_STYLE):
            return fn(*args, **kwargs)

    return wrapper


def _subplots(*args, figsize=None, **kwargs):
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*args, **kwargs)


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=_DPI)
    return path


def _finite(*arrays):
    ok = np.all([np.isfinite(np.asarray(a, float)) for a in arrays], axis=0)
    return [np.asarray(a, float)[ok] for a in arrays]


def _spearman(a, b) -> float:
    a, b = _finite(a, b)
    if len(a) < 3:
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


def _axis_scale(values, *, logarithmic: bool | None = None) -> tuple[str, dict]:
    """(scale, keywords) for ``ax.set_xscale``: "log" for values spanning more than three
    decades or with a heavy right tail (p99 > 20 × median magnitude) of which fewer than 5 % are
    ≤ 0 (those are then not drawn: see :func:`_axis_label`), "symlog" when more are (linear within
    ± the power of ten below the 10th percentile magnitude), else "linear". ``logarithmic``:
    force a log-type (True) or linear (False) scale instead of deciding."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    mag = np.abs(v[v != 0])
    if logarithmic is None:
        logarithmic = len(mag) > 1 and (np.quantile(mag, 0.99) > 20 * np.median(mag)
                                        or mag.max() > 1e3 * mag.min())
    if not logarithmic or len(mag) == 0:
        return "linear", {}
    if np.mean(v <= 0) < 0.05:
        return "log", {"nonpositive": "mask"}
    return "symlog", {"linthresh": float(10.0 ** np.floor(np.log10(np.quantile(mag, 0.1))))}


def _axis_label(name: str, scale: str, values) -> str:
    """``name`` with its scale and, on a log axis, how many values ≤ 0 it cannot show."""
    if scale == "linear":
        return name
    v = np.asarray(values, float)
    n = int(np.sum(np.isfinite(v) & (v <= 0))) if scale == "log" else 0
    hidden = f"; {n} value{'s' * (n != 1)} ≤ 0 not shown" if n else ""
    return f"{name} ({'log' if scale == 'log' else 'symmetric log'}{hidden})"


def _bin_edges(values, scale: str, options: dict, bins: int = 40) -> np.ndarray:
    """Bin edges evenly spaced on the axis ``scale`` (log, symlog or linear) over ``values``."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if scale == "log":
        v = v[v > 0]
        return np.geomspace(v.min(), v.max(), bins + 1)
    if scale == "symlog":
        t = SymmetricalLogTransform(10, options["linthresh"], 1.0)
        lo, hi = t.transform(np.array([v.min(), v.max()]))
        return t.inverted().transform(np.linspace(lo, hi, bins + 1))
    return np.histogram_bin_edges(v, bins=bins)


def _set_scale(ax, axis: str, scale: str, options: dict, values=None) -> None:
    """Apply ``scale`` to the x or y axis with at most about 7 labelled decades (symlog: 0 and
    at most two decades on each side of ``values``' range)."""
    getattr(ax, f"set_{axis}scale")(scale, **options)
    target = getattr(ax, f"{axis}axis")
    if scale == "log":
        target.set_major_locator(LogLocator(base=10, numticks=7))
    elif scale == "symlog" and values is not None:
        v = np.asarray(values, float)
        v = v[np.isfinite(v)]
        low = int(np.floor(np.log10(options["linthresh"])))
        ticks = [0.0]
        for sign, extreme in ((-1, -v.min()), (1, v.max())):
            if extreme > options["linthresh"]:  # at most two decades labelled per side
                top = int(np.floor(np.log10(extreme)))
                step = max(1, -(-(top - low + 1) // 2))
                ticks += [sign * 10.0 ** e for e in range(top, low - 1, -step)]
        target.set_major_locator(FixedLocator(sorted(ticks)))
        target.set_minor_locator(NullLocator())


def _show_image(ax, image):
    image = np.asarray(image)
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray_r" if image.max() <= 1 else "gray", vmin=0, vmax=1)
    else:
        ax.imshow(np.clip(image, 0, 1))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


def _image_grid(images, order, titles, red, path, suptitle: str) -> Path:
    """images[order] in rows of 8, each with its title (in red where ``red``)."""
    cols = min(8, len(order)) or 1
    rows = math.ceil(len(order) / cols) or 1
    fig, axes = _subplots(rows, cols, figsize=(1.3 * cols, 1.75 * rows + 0.55), squeeze=False)
    for j, ax in enumerate(axes.flat):
        if j >= len(order):
            ax.axis("off")
            continue
        _show_image(ax, images[order[j]])
        ax.set_title(titles[j], fontsize=6.5, color="tab:red" if red[j] else "black")
    fig.suptitle(suptitle, fontsize=9)
    return _save(fig, path)
