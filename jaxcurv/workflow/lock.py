"""One run per output folder: an exclusive, non-blocking ``flock`` on ``<out>/.lock``.

The holder writes its pid, host and start time into the lock file; a second run gets
:class:`OutputLocked` naming that process instead of racing the first one over the same cache and
checkpoints. The lock is released when the ``with`` block exits (normally, by an exception or by
KeyboardInterrupt) and by the operating system when the process dies, so a killed run never
leaves a stale lock behind. The file itself stays (deleting it would let two runs lock two
different files of the same name). POSIX only (``fcntl``); on network file systems ``flock`` is
only as reliable as the server's lock support.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from jaxcurv.errors import OutputLocked

__all__ = ["OutputLocked", "exclusive_lock", "LOCK_FILE"]

LOCK_FILE = ".lock"


def _output_folder(out_dir: str | os.PathLike) -> Path:
    """``out_dir`` created if needed; ValueError when it is a file or cannot be created."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output folder {out} is a file; pass a folder (it is created if missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"cannot create the output folder {out} ({err.strerror or err}); pass a "
                         "writable folder") from None
    return out


def _holder(fd: int) -> str:
    """A description of the process recorded in the lock file."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict) or "pid" not in info:
        return "another process (pid not yet recorded)"
    return (f"pid {info['pid']} on {info.get('host', '?')}, started "
            f"{info.get('started', '?')}")


@contextlib.contextmanager
def exclusive_lock(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Hold ``<out_dir>/.lock`` exclusively for the ``with`` block; yields the lock file's path.

    Raises OutputLocked (naming the pid, host and start time of the holder) when another process
    (or another open of the file in this process) holds it, ValueError when ``out_dir`` is a file
    or not writable."""
    import fcntl  # noqa: PLC0415  (POSIX only; imported here so the package imports elsewhere)

    out = _output_folder(out_dir)
    path = out / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise ValueError(f"cannot write to the output folder {out} ({err.strerror or err}); pass "
                         "a writable folder") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputLocked(f"{out} is in use by {_holder(fd)}; wait for that run to finish "
                               "or pass another output folder") from None
        try:
            started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
            record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "started": started}).encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, record, 0)
            yield path
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
