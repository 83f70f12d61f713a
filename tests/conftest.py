"""Shared test helpers."""

import os
import subprocess
import sys

import pytest


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
