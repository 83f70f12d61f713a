"""Write docs/measurements.md: every measured figure of the repository, with its device and the
command that produced it, read from the committed result files (never typed by hand).

    python docs/measurements.py          # rewrite docs/measurements.md
    python docs/measurements.py --check  # exit 1 when docs/measurements.md is not up to date

Sources: every ``summary.json`` under results/evidence/ and results/archive/ (its
``headlines``, ``command``, ``environment`` and ``timings_s``; a ``time.txt`` beside it, the
output of ``/usr/bin/time -v``, adds the run's CPU time and peak memory) and every JSON under
bench/results/ (its ``headlines`` or, for benchmark tables, its ``rows``). The page is a pure
function of those files, so a test regenerates it byte for byte.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "measurements.md"

__all__ = ["render", "main"]


def _number(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if value != value:
        return "nan"
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.4g}"
    return f"{value:.3e}"


def _device(env: Mapping[str, Any]) -> str:
    if not env:
        return "not recorded"
    backend = env.get("backend", "?")
    if backend == "cpu":
        what = f"CPU ({env.get('machine', '?')}, {env.get('cpu_count', '?')} cores)"
    else:
        what = f"{backend.upper()} {env.get('device_kind', '')} ×{env.get('device_count', 1)}"
    load = env.get("load_avg_1min_end", env.get("load_avg_1min"))  # benchmarks record both
    extra = [f"jax {env.get('jax', '?')}"]
    if load is not None:
        extra.append(f"load {load:.1f} at the end")
    return f"{what}; {', '.join(extra)}"


def _when(env: Mapping[str, Any]) -> str:
    parts = [env.get("date"), f"commit {env['commit']}" if env.get("commit") else None]
    return ", ".join(p for p in parts if p) or "not recorded"


def _headline_rows(headlines: Mapping[str, Mapping[str, Any]]) -> list[str]:
    rows = ["| figure | value | interval | over | the paper |", "| --- | --- | --- | --- | --- |"]
    for name, h in headlines.items():
        interval = h.get("interval")
        text = "—" if not interval else f"[{_number(interval[0])}, {_number(interval[1])}]"
        unit = f" {h['unit']}" if h.get("unit") else ""
        rows.append(f"| {name}: {h.get('what', '')} | {_number(h.get('value'))}{unit} | {text} | "
                    f"{h.get('over') or '—'} | {_number(h.get('paper'))} |")
    return rows


_TIME_FIELDS = {"User time (seconds)": "user", "System time (seconds)": "sys",
                "Elapsed (wall clock) time (h:mm:ss or m:ss)": "wall",
                "Maximum resident set size (kbytes)": "rss_kb"}


def _seconds(clock: str) -> float:
    """``h:mm:ss`` or ``m:ss.ss`` as seconds."""
    total = 0.0
    for part in clock.split(":"):
        total = 60.0 * total + float(part)
    return total


def _time_record(path: Path) -> dict[str, float]:
    """The wall clock, user and system CPU seconds and peak RSS (kB) of a ``/usr/bin/time -v``
    record; an empty dict without the file."""
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        name, _, value = line.strip().rpartition(": ")
        if name in _TIME_FIELDS:
            key = _TIME_FIELDS[name]
            out[key] = _seconds(value) if key == "wall" else float(value)
    return out


def _time_line(record: Mapping[str, float]) -> list[str]:
    """``/usr/bin/time -v``: wall, CPU (user + sys) and what it means for 2 idle cores, RSS."""
    if not {"user", "sys"} <= set(record):
        return []
    cpu = record["user"] + record["sys"]
    wall = f"wall {_number(record['wall'])} s, " if "wall" in record else ""
    rss = (f", peak RSS {_number(record['rss_kb'] / 1e6)} GB" if "rss_kb" in record else "")
    return [f"- `/usr/bin/time -v` (time.txt): {wall}CPU time {_number(cpu)} s (user "
            f"{_number(record['user'])} + sys {_number(record['sys'])}; CPU time / 2 = "
            f"{_number(cpu / 2)} s is the estimate for 2 idle cores){rss}"]


def _evidence(folder: Path) -> list[str]:
    summary = json.loads((folder / "summary.json").read_text())
    env = summary.get("environment", {})
    rel = folder.relative_to(ROOT).as_posix()
    total = (summary.get("timings_s") or {}).get("total")
    lines = [f"### `{rel}`", "",
             f"- command: `{summary.get('command') or 'not recorded'}`",
             f"- device: {_device(env)}",
             f"- when: {_when(env)}",
             f"- wall time: {_number(total)} s" if total is not None else "- wall time: —",
             *_time_line(_time_record(folder / "time.txt")), ""]
    headlines = summary.get("headlines") or {}
    if headlines:
        lines += _headline_rows(headlines)
    else:
        lines.append("No headline figures recorded in this summary.")
    return lines + [""]


def _bench(path: Path) -> list[str]:
    data = json.loads(path.read_text())
    env = data.get("environment", {})
    rel = path.relative_to(ROOT).as_posix()
    lines = [f"### `{rel}`", "", f"- command: `{data.get('command') or 'not recorded'}`",
             f"- device: {_device(env)}", f"- when: {_when(env)}", ""]
    if data.get("headlines"):
        lines += _headline_rows(data["headlines"])
    elif data.get("rows"):
        columns = list(data["rows"][0])
        lines += ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns)
                  + " |"]
        lines += ["| " + " | ".join(_number(r.get(c)) for c in columns) + " |"
                  for r in data["rows"]]
    else:
        lines.append("No headline figures or rows recorded in this file.")
    return lines + [""]


def render(root: Path = ROOT) -> str:  # noqa: C901 (one page, read top to bottom)
    """The page, from the result files under ``root``."""
    evidence, archive = (sorted(p.parent for p in (root / "results" / kind).rglob("summary.json"))
                         for kind in ("evidence", "archive"))
    bench = sorted((root / "bench" / "results").rglob("*.json")) \
        if (root / "bench" / "results").is_dir() else []
    lines = ["# Measurements", "",
             "Every measured figure of the repository, with the device and the command that "
             "produced it. Generated by `python docs/measurements.py` from the committed "
             "`summary.json` files under `results/evidence/` and `results/archive/` and the JSON "
             "files under "
             "`bench/results/`; edit those runs, not this page. Intervals say what they are over "
             "(training seeds, target models, or bootstrap resamples of examples).", "",
             "## Evidence runs (`results/evidence/`)", ""]
    for folder in evidence:
        lines += _evidence(folder)
    if archive:
        lines += ["## Archived single runs (`results/archive/`)", "",
                  "Made before per-member statistics were committed: not recomputable, one "
                  "training run each (intervals over examples only); see "
                  "`results/archive/README.md`.", ""]
        for folder in archive:
            lines += _evidence(folder)
    lines += ["## Benchmarks (`bench/results/`)", ""]
    if not bench:
        lines += ["No benchmark results are committed yet.", ""]
    for path in bench:
        lines += _bench(path)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when docs/measurements.md differs from a regeneration")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = PAGE.read_text() if PAGE.is_file() else ""
        if current != text:
            print("docs/measurements.md is out of date: run python docs/measurements.py",
                  file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text)
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
