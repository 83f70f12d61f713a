"""Figures (``figures``: one function per figure), result files (``files``: CSV, JSON and the
HTML report). Every name is importable from ``jaxcurv.report``; the figure functions load
matplotlib on first use, so writing JSON/CSV/HTML never imports it.
"""

from jaxcurv._lazy import lazy_names

_FIGURES = ("figure_top_ranked", "figure_extreme_images", "figure_top_memorized",
            "figure_curvature_histogram", "figure_mem_vs_curvature", "figure_proxies_vs_mem",
            "figure_trace_vs_trace_sq", "figure_roc", "figure_mia_vs_mem", "figure_bound_fit",
            "figure_binned_bound_fits", "figure_label_noise", "figure_privacy_bounds",
            "figure_mem_vs_epsilon", "figure_curve_vs_epsilon", "figure_series_vs_epsilon",
            "figure_gain_by_mem", "figure_distributions", "figure_frontier")
_FILES = ("write_csv", "write_json", "write_html", "to_jsonable", "write_text_atomic",
          "output_error", "retire_outputs", "publish_outputs", "STAGING", "PREVIOUS")

__all__ = [*_FIGURES, *_FILES, "figures", "files"]


__getattr__, __dir__ = lazy_names(__name__, {
    **{name: ".figures" for name in _FIGURES}, **{name: ".files" for name in _FILES},
    "figures": "", "files": ""}, globals())
