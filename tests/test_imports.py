"""Import boundaries: the device-side DP code and the curvature core load no accounting, data or
plotting library, and the privacy package still serves every public name (loading it on use)."""

import os
import subprocess
import sys

HEAVY = ("dp_accounting", "tensorflow_datasets", "matplotlib")


def _run(script: str) -> str:
    """Run ``script`` in a fresh Python (so nothing is already imported); returns its stdout."""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert out.returncode == 0 and out.stdout.strip().endswith("OK"), out.stderr[-3000:]
    return out.stdout


def test_device_dp_code_and_curvature_import_no_heavy_library():
    out = _run(
        "import sys\n"
        "import jaxcurv.privacy.dpsgd, jaxcurv.privacy.plan, jaxcurv.curvature\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
        "print('OK')\n"
    )
    assert out.splitlines()[0] == "[]", out


def test_privacy_names_load_lazily():
    out = _run(
        "import sys\n"
        "import jaxcurv.privacy as privacy\n"
        "from jaxcurv.privacy import DPConfig, clip_per_example, poisson_batches\n"
        "print('dp_accounting' in sys.modules)\n"
        "eps = privacy.epsilon(1.1, 256 / 60000, 14063, 1e-5)\n"
        "print('dp_accounting' in sys.modules, round(eps, 3))\n"
        "print('OK')\n"
    )
    lines = out.splitlines()
    assert lines[0] == "False", out
    assert lines[1] == "True 2.597", out


def test_every_public_privacy_name_resolves():
    import jaxcurv.privacy as privacy

    for name in privacy.__all__:
        assert getattr(privacy, name) is not None, name
    for module in ("plan", "dpsgd", "accounting", "theory", "audit"):
        assert getattr(privacy, module).__name__ == f"jaxcurv.privacy.{module}"
    assert set(privacy.__all__) <= set(dir(privacy))


def test_report_writers_load_no_matplotlib_and_every_report_name_resolves():
    out = _run(
        "import sys, tempfile, os\n"
        "from jaxcurv import report\n"
        "report.write_json(os.path.join(tempfile.mkdtemp(), 'a.json'), {'x': float('nan')})\n"
        "print('matplotlib' in sys.modules)\n"
        "print(all(getattr(report, n) is not None for n in report.__all__))\n"
        "print(set(report.__all__) <= set(dir(report)), 'matplotlib' in sys.modules)\n"
        "print('OK')\n"
    )
    assert out.splitlines()[:3] == ["False", "True", "True True"], out
