"""README examples that cannot rot: the ```python blocks of the sections listed in SECTIONS run here.

A section's blocks run in order, in one fresh Python process with one shared namespace (as a
reader pasting them into one script would), in a temporary working directory, with the repository
on PYTHONPATH. A block preceded by ``<!-- not run: <reason> -->`` (the reason is required and is
shown in the README source, e.g. "needs a GPU") is left out. To have a section checked, add its
heading to SECTIONS (with a function that checks what it printed, or None); each section must
hold at least one runnable block and finish in seconds.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

TIMEOUT_S = 300  # per section, generous for a loaded machine; the sections take seconds

_HEADING = re.compile(r"^(#{1,6})\s+(?P<title>.+?)\s*#*\s*$")
_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
_NOT_RUN = re.compile(r"^\s*<!--\s*not run:(?P<reason>.*?)-->\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced code block: its section heading, language, first code line (1-based) and text;
    ``not_run`` is the reason given in a ``<!-- not run: ... -->`` line just above it, else None."""

    section: str | None
    lang: str
    line: int
    code: str
    not_run: str | None


def code_blocks(text: str) -> list[Block]:
    """Every fenced code block of a Markdown text, with the heading it sits under."""
    blocks, section, fence, start, lang, body, marker = [], None, None, 0, "", [], None
    last_text = None  # the last non-blank line outside code, to find a not-run marker
    for number, line in enumerate(text.splitlines(), start=1):
        if fence is not None:
            if line.strip().startswith(fence) and set(line.strip()) <= set(fence[0]):
                blocks.append(Block(section, lang, start, "\n".join(body) + "\n", marker))
                fence, body, last_text = None, [], None
            else:
                body.append(line)
            continue
        opened = _FENCE.match(line)
        if opened:
            fence, lang, start, body = opened["fence"], opened["lang"].lower(), number + 1, []
            found = _NOT_RUN.match(last_text or "")
            marker = found["reason"].strip() if found else None
            continue
        heading = _HEADING.match(line)
        if heading:
            section = heading["title"]
        if line.strip():
            last_text = line
    if fence is not None:
        raise ValueError(f"code block opened at line {start - 1} is never closed")
    return blocks


def section_blocks(section: str, *, path: Path = README) -> list[Block]:
    """The ```python blocks under the heading ``section`` of ``path``."""
    return [b for b in code_blocks(path.read_text(encoding="utf-8"))
            if b.section == section and b.lang == "python"]


_DRIVER = """
import json, sys
namespace = {"__name__": "__main__"}
for where, code in json.load(open(sys.argv[1], encoding="utf-8")):
    exec(compile(code, where, "exec"), namespace)
"""


def run_section(section: str, workdir: Path, *, path: Path = README,
                timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run the runnable python blocks of ``section`` in order in one fresh interpreter (cwd
    ``workdir``); tracebacks name the README line where each block starts."""
    blocks = [b for b in section_blocks(section, path=path) if b.not_run is None]
    if not blocks:
        raise ValueError(f"README section {section!r} has no runnable ```python block")
    # A block's line numbers in tracebacks count from its first code line: pad it so they match
    # the README's lines.
    payload = [(f"{path.name}", "\n" * (b.line - 1) + b.code) for b in blocks]
    (workdir / "blocks.json").write_text(json.dumps(payload), encoding="utf-8")
    env = dict(os.environ, MPLBACKEND="Agg", JAXCURV_CACHE_DIR=str(workdir / "cache"),
               PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get(
                   "PYTHONPATH")])]))
    return subprocess.run([sys.executable, "-c", _DRIVER, str(workdir / "blocks.json")],
                          cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)


def _check_dp_loop(stdout: str) -> None:
    """The DP-SGD example prints the ε of its settings, learns, and the README quotes its output."""
    line = stdout.strip().splitlines()[-1]
    found = re.fullmatch(r"test accuracy (\S+) at ε = (\S+) \(δ = 1e-5\)", line)
    assert found, line
    from jaxcurv import privacy

    # The README's settings: B = 128 of N = 1,438 digits, σ = 1.5, 200 steps.
    assert float(found[2]) == pytest.approx(privacy.epsilon(1.5, 128 / 1438, 200, 1e-5), abs=0.005)
    assert float(found[1]) > 0.8  # private training still learns the digits
    assert f"prints `{line}`" in README.read_text(encoding="utf-8")


# The README sections (heading text without the #s) whose ```python blocks must run, each with a
# check of what it printed (or None).
def _check_own_model(stdout: str) -> None:
    """The four model kinds give (4, 10) logits and the audit of the NNX one learns the digits
    (chance is 0.1; 200 training examples per member)."""
    lines = stdout.strip().splitlines()
    for kind in ("linen", "nnx", "equinox", "functions"):
        assert f"{kind} (4, 10)" in lines, stdout
    found = re.fullmatch(r"test accuracy (\S+); (\S+)", lines[-1])
    assert found and float(found[1]) > 0.5 and found[2].endswith("report.html"), lines[-1]


SECTIONS = {
    "DP-SGD in your own training loop": _check_dp_loop,
    "Audit your own model": _check_own_model,
}


@pytest.mark.parametrize("section", list(SECTIONS))
def test_readme_section_runs(section, tmp_path):
    start = time.perf_counter()
    done = run_section(section, tmp_path)
    assert done.returncode == 0, (
        f"README section {section!r} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    print(f"{section!r}: {time.perf_counter() - start:.1f} s\n{done.stdout}")
    if SECTIONS[section] is not None:
        SECTIONS[section](done.stdout)


def test_every_not_run_marker_gives_a_reason_and_precedes_a_block():
    text = README.read_text(encoding="utf-8")
    markers = [line for line in text.splitlines() if re.search(r"<!--\s*not run", line)]
    assert all(_NOT_RUN.match(line) for line in markers), "write '<!-- not run: reason -->'"
    marked = {b.line for b in code_blocks(text) if b.not_run is not None}
    assert len(marked) == len(markers), "a '<!-- not run: ... -->' line must sit right above a block"
    for block in code_blocks(text):
        if block.not_run is not None:
            assert block.not_run, f"the block at README line {block.line} needs a reason"


def test_listed_sections_exist_with_python_blocks():
    for section in SECTIONS:
        assert section_blocks(section), f"README has no ```python block under {section!r}"


def test_the_extractor_on_a_small_document(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text(
        "# Top\n\n```python\nx = 1\n```\n\n## Runs\n\ntext\n\n```python\ny = 2\n"
        "print(y)\n```\n\n```bash\nls\n```\n\n<!-- not run: needs a GPU -->\n````python\n"
        "raise SystemExit(3)\n```\n````\n\n### Fails ###\n\n```python\nraise ValueError('x')\n"
        "```\n", encoding="utf-8")
    blocks = code_blocks(doc.read_text(encoding="utf-8"))
    assert [(b.section, b.lang, b.line, b.not_run) for b in blocks] == [
        ("Top", "python", 4, None), ("Runs", "python", 12, None), ("Runs", "bash", 17, None),
        ("Runs", "python", 22, "needs a GPU"), ("Fails", "python", 29, None)]
    assert blocks[3].code == "raise SystemExit(3)\n```\n"  # a shorter fence does not close it
    done = run_section("Runs", tmp_path, path=doc)
    assert done.returncode == 0 and done.stdout == "2\n"
    failed = run_section("Fails", tmp_path, path=doc)
    assert failed.returncode != 0
    assert 'File "doc.md", line 29' in failed.stderr  # tracebacks point at the document's line
    with pytest.raises(ValueError, match="no runnable"):
        run_section("Nowhere", tmp_path, path=doc)
