"""Shared test fixtures, and Ctrl-C that stops the suite even inside an in-process CLI call."""

import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading

import numpy as np
import pytest

# One XLA compilation cache for the whole test run, shared by this process, pytest-xdist workers
# and every subprocess a test starts (they inherit the environment): the many tests that build the
# same kernel for the same tiny model compile it once. It is created empty for each run (a run's
# time never depends on an earlier run) and removed at exit by the process that created it. XLA
# keys each entry on the program and the compiler, so a hit returns the same executable.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _XLA_CACHE = tempfile.mkdtemp(prefix="jaxcurv-tests-xla-")
    atexit.register(shutil.rmtree, _XLA_CACHE, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _XLA_CACHE
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

# The `jaxcurv` command turns KeyboardInterrupt into exit status 130 (what a user at a terminal
# wants); a test calling main() in-process would then swallow the Ctrl-C meant for pytest. A SIGINT
# handler notes the signal before raising KeyboardInterrupt as Python's default handler does, and
# the phase of the test that was running re-raises it when it ends, so pytest stops.
_SIGINT_SEEN = []


def _note_sigint(signum, frame):
    _SIGINT_SEEN.append(signum)
    raise KeyboardInterrupt


_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def pytest_configure(config):
    # A pytest-xdist worker (``-n 2``) shares the cores with the other worker: XLA's CPU thread
    # pools would oversubscribe them and spin (measured: docs/design.md, "Tests").
    # Set before any test module imports jax; subprocesses of the worker inherit it.
    if hasattr(config, "workerinput") and _ONE_THREAD not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_ONE_THREAD}".strip()
    if threading.current_thread() is threading.main_thread() and \
            signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _note_sigint)


def _reraise_interrupt():
    if _SIGINT_SEEN:
        raise KeyboardInterrupt("Ctrl-C during an in-process command")


# The modules that take longest on 2 cores (`--durations`), longest first.
_LONGEST_MODULES = ("tests/test_suite.py", "tests/test_icml_experiments.py",
                    "tests/test_audit_api.py", "tests/test_distributed.py", "tests/test_peers.py")


def pytest_collection_modifyitems(config, items):
    """The longest modules run first, so that with two workers (``-n 2``) they start at once
    rather than forming a tail; a module's tests stay together and in order (a stable sort on one
    key per module)."""
    def rank(item) -> int:
        module = item.nodeid.split("::")[0]
        return _LONGEST_MODULES.index(module) if module in _LONGEST_MODULES else len(
            _LONGEST_MODULES)

    items.sort(key=rank)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    result = yield
    _reraise_interrupt()
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    result = yield
    _reraise_interrupt()
    return result


def _run_on_fake_devices(script: str, *, devices: int = 8, timeout: int = 300) -> str:
    """Run ``script`` in a fresh Python with ``devices`` fake CPU devices; returns its stdout and
    fails the test (showing stderr) unless the script printed OK at the end."""
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                         timeout=timeout)
    assert out.stdout.strip().endswith("OK"), out.stderr[-3000:]
    return out.stdout


@pytest.fixture
def run_on_fake_devices():
    return _run_on_fake_devices


@pytest.fixture
def fake_cifar10(tmp_path, monkeypatch):
    """``make(side)``: a tiny CIFAR-10 file (30 random training images of side × side × 3, 10
    blank test images; labels 0..9 in turn) in a folder that $JAXCURV_DATA_DIR names."""
    def make(side: int) -> None:
        rng = np.random.default_rng(0)
        np.savez(tmp_path / "cifar10.npz",
                 train_images=rng.integers(0, 256, (30, side, side, 3), dtype=np.uint8),
                 train_labels=np.arange(30) % 10,
                 test_images=np.zeros((10, side, side, 3), np.uint8), test_labels=np.arange(10))
        monkeypatch.setenv("JAXCURV_DATA_DIR", str(tmp_path))

    return make
