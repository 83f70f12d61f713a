"""The errors jaxcurv raises on purpose, one small hierarchy.

Every error a user can fix is a :class:`JaxcurvError`; the ``jaxcurv`` command prints it as one line
and exits with the class's ``exit_code`` (1 for an I/O failure such as a full disk, else 2). Each class
also derives from the builtin exception a Python caller would expect (``ValueError`` for bad
input, ``OSError`` for I/O), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "JaxcurvError",
    "ConfigError",
    "DataError",
    "DataNotFound",
    "MissingDependency",
    "OutputError",
    "OutputLocked",
    "TrainingDiverged",
]


class JaxcurvError(Exception):
    """Base class: a problem the user can fix, reported as one line by the command line."""

    exit_code: int = 2


class ConfigError(JaxcurvError, ValueError):
    """A setting, argument or input array is invalid (raised before any compute)."""


class DataError(JaxcurvError, ValueError):
    """A dataset is missing, unreadable or inconsistent (e.g. labels outside the classes)."""


class DataNotFound(DataError, FileNotFoundError):
    """A dataset's files are missing. ``what``: the headline; ``command_line``: the fix from the
    command line; ``looked_for``: the places searched; ``other_ways``: further ways to get it."""

    def __init__(self, what: str, *, command_line: str, looked_for: tuple[str, ...] = (),
                 other_ways: tuple[str, ...] = ()):
        self.what, self.command_line = what, command_line
        self.looked_for, self.other_ways = tuple(looked_for), tuple(other_ways)
        lines = [what + (" Looked for: " + "; ".join(looked_for) + "." if looked_for else ""),
                 "From the command line: " + command_line, *other_ways]
        super().__init__("\n".join(lines))

    def lines(self, prefix: str) -> list[str]:
        """The message for the command line: headline, the command-line fix, what was looked
        for, the other ways."""
        looked = ["Looked for: " + "; ".join(self.looked_for)] if self.looked_for else []
        return [f"{prefix}{self.what}", "From the command line: " + self.command_line, *looked,
                *self.other_ways]


class MissingDependency(JaxcurvError, ImportError):
    """An optional dependency is not installed; the message names the extra that brings it."""

    def __init__(self, package: str, extra: str, needed_for: str):
        super().__init__(f"{needed_for} needs {package}, which is not installed: "
                         f"pip install 'jaxcurv[{extra}]'")
        self.package, self.extra = package, extra


class OutputError(JaxcurvError, OSError):
    """Writing results failed (disk full, no permission, a directory where a file belongs)."""

    exit_code = 1


class OutputLocked(JaxcurvError, RuntimeError):
    """Another run holds the output folder's lock."""


class TrainingDiverged(JaxcurvError, ValueError):
    """Training produced non-finite parameters or an exploding loss; the run stops."""
