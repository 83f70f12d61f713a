"""What a run ran on: versions, backend, devices, host cores and load, echoed into every result
file (summary.json of the audit and the experiments, the benchmarks' JSON)."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess
import sys
from typing import Any

from jaxcurv.workflow.timing import load_average

__all__ = ["environment", "describe_device", "source_commit"]

_PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy", "orbax-checkpoint", "dp-accounting")


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def source_commit() -> str | None:
    """The git commit of the jaxcurv source in use (``+changes`` when files differ from it), or
    None outside a checkout of jaxcurv (an installed copy inside some other git repository, e.g.
    a pyenv clone, is not one: the repository must track this package)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        tracked = subprocess.run(["git", "-C", root, "ls-files", "--error-unmatch",
                                  os.path.join("jaxcurv", "__init__.py")],
                                 capture_output=True, text=True, timeout=10)
        if tracked.returncode != 0:
            return None
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short=12", "HEAD"],
                              capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def environment() -> dict[str, Any]:
    """Python and package versions, JAX backend and devices, host cores, XLA flags, load, argv,
    the UTC date and the source commit."""
    import jax

    devices = jax.devices()
    return {
        "python": platform.python_version(),
        "versions": {p: _version(p) for p in _PACKAGES},
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "devices": [f"{d.platform}:{getattr(d, 'device_kind', '')}" for d in devices],
        "process_count": jax.process_count(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "load_avg_1min": load_average(),
        "argv": [_relative(sys.argv[0]), *sys.argv[1:]] if sys.argv else [],
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": source_commit(),
    }


def describe_device(env: dict[str, Any] | None = None) -> str:
    """One line naming the device for tables, e.g. 'cpu: cpu ×1 (2 host cores, load 1.90, jax
    0.10.2)'."""
    env = environment() if env is None else env
    return (f"{env['backend']}: {env['device_kind']} ×{env['device_count']} "
            f"({env['cpu_count']} host cores, load {env['load_avg_1min']:.2f}, "
            f"jax {env['jax']})")


def _relative(path: str) -> str:
    """A script path relative to the working directory when it lies below it, else its file name
    (an installed console script): no machine paths in result files."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return os.path.basename(path)
    return os.path.basename(path) if rel.startswith("..") else rel
