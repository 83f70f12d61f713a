"""Rebuild every table of an evidence folder from its committed per-member statistics.

    python -m experiments.recompute results/evidence/<folder> [<folder> ...]

A folder written by an experiment holds ``summary.json`` (the experiment's name and its config
echo, and the sha256 of the statistics), ``statistics.npz`` (the per-member statistics:
subset masks, confidences, losses, curvature, ...) and the tables as CSV files. This command
loads the statistics (checking their sha256), rebuilds the config from the echo, calls the
experiment's ``tables(statistics, config)`` — the same function its run used — and compares each
table, as written, with the committed CSV byte for byte. It prints one line per table and exits
with status 1 on any mismatch or missing table (2 for a folder it cannot read). ``--rewrite``
replaces the committed tables by the recomputed ones (after a change to how tables are written,
never to hide a changed number: it prints each table it changed and its first difference, and
refuses statistics whose sha256 differs from the summary's). Folders may nest
(an experiment that runs several configurations writes one sub-folder per configuration): every
folder below the given one that holds a ``statistics.npz`` is checked.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from jaxcurv.errors import ConfigError
from jaxcurv.workflow import experiment as X
from jaxcurv.workflow.settings import apply_overrides

__all__ = ["recompute_folder", "statistics_folders", "main"]


def statistics_folders(root: str | Path) -> list[Path]:
    """``root`` and every folder below it that holds a statistics file, sorted."""
    root = Path(root)
    return sorted({p.parent for p in root.rglob(X.STATISTICS_FILE)})


def _config(module, echo: dict):
    """The run's config: its named config with the echoed values applied."""
    base = module.get_config(echo["name"])
    fields = {k: v for k, v in echo.items() if k in base.__dataclass_fields__}
    return apply_overrides(base, fields)


def recompute_folder(folder: str | Path, *, rewrite: bool = False
                     ) -> list[tuple[str, bool, str]]:
    """(table, matches, detail) for every table the folder's experiment builds from its
    statistics (``rewrite``: and put the recomputed tables in place of the committed ones);
    ConfigError when the folder lacks what a recomputation needs."""
    folder = Path(folder)
    summary_path = folder / "summary.json"
    if not summary_path.is_file():
        raise ConfigError(f"{folder} has no summary.json")
    summary = json.loads(summary_path.read_text())
    name = summary.get("experiment")
    if not name:
        raise ConfigError(f"{summary_path} names no experiment")
    module = importlib.import_module(f"experiments.{name}")
    if not hasattr(module, "tables"):
        raise ConfigError(f"experiments.{name} has no tables(statistics, config) function")
    statistics = X.load_statistics(folder, sha256=summary.get("statistics_sha256"))
    config = _config(module, summary["config"])
    rebuilt = module.tables(statistics, config)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        X.write_tables(tmp, rebuilt)
        for table in rebuilt:
            committed = folder / f"{table}.csv"
            fresh = (Path(tmp) / f"{table}.csv").read_bytes()
            if not committed.is_file():
                results.append((table, False, f"{committed} is missing"))
            elif committed.read_bytes() != fresh:
                results.append((table, False, _first_difference(committed.read_bytes(), fresh)))
            else:
                results.append((table, True, f"{len(fresh.splitlines()) - 1} rows"))
            if rewrite:
                committed.write_bytes(fresh)
    return results


def _first_difference(committed: bytes, fresh: bytes) -> str:
    old, new = committed.decode().splitlines(), fresh.decode().splitlines()
    for i, (a, b) in enumerate(zip(old, new)):
        if a != b:
            return f"line {i + 1}: committed {a!r} vs recomputed {b!r}"
    return f"committed {len(old)} lines vs recomputed {len(new)}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("folders", nargs="+", help="evidence folders")
    parser.add_argument("--rewrite", action="store_true",
                        help="write the recomputed tables over the committed ones (after a change "
                             "to how tables are written); exits 0 once they are written")
    args = parser.parse_args(argv)
    status = 0
    for root in args.folders:
        folders = statistics_folders(root)
        if not folders:
            print(f"{root}: no {X.STATISTICS_FILE} here or below", file=sys.stderr)
            status = max(status, 2)
        for folder in folders:
            try:
                results = recompute_folder(folder, rewrite=args.rewrite)
            except (ConfigError, OSError, KeyError, ValueError) as err:
                print(f"{folder}: cannot recompute: {err}", file=sys.stderr)
                status = max(status, 2)
                continue
            for table, ok, detail in results:
                verdict = "matches" if ok else ("REWRITTEN" if args.rewrite else "MISMATCH")
                print(f"{folder}/{table}.csv: {verdict} ({detail})")
                if not ok and not args.rewrite:
                    status = max(status, 1)
    return status


if __name__ == "__main__":
    sys.exit(main())
