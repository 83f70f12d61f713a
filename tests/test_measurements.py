"""docs/measurements.md is generated from the committed result files: it regenerates byte for
byte, and the generated command of a config rebuilds that config through the command line."""

import runpy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_measurements_page_regenerates_byte_identically():
    module = runpy.run_path(str(ROOT / "docs" / "measurements.py"))
    assert (ROOT / "docs" / "measurements.md").read_text() == module["render"](ROOT)


@pytest.mark.parametrize("overrides", [
    {}, {"models": 8, "dp_epsilon": 4.0, "zero_order_members": None},
    {"model_kwargs": {"hidden": 64}, "augment": False, "zero_order": False, "label_noise": 0.1},
    {"optimizer": "sam-gnr", "gnr_penalty": 0.2, "adversarial": True, "seed": 3},
])
def test_the_recorded_command_rebuilds_the_config(overrides):
    import dataclasses
    import shlex

    from jaxcurv.cli import _config, build_parser
    from jaxcurv.workflow.config import AuditConfig
    from jaxcurv.workflow.flags import command_line

    config = dataclasses.replace(AuditConfig(progress=True), **overrides)
    words = shlex.split(command_line("jaxcurv audit", config))
    assert words[:2] == ["jaxcurv", "audit"]
    args = build_parser().parse_args(words[1:])
    assert _config(AuditConfig, args) == config
