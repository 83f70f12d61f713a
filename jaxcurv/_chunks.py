"""Host loop that feeds fixed-shape, padded chunks of examples to one compiled function (private)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

__all__ = ["map_chunks"]


def map_chunks(fn: Callable[..., tuple], arrays: Sequence[np.ndarray], *, step: int, chunk: int,
               out_axis: int = 0, progress: bool = False, desc: str = "") -> tuple[np.ndarray, ...]:
    """Apply ``fn(*chunk_arrays, idx, real) -> tuple of arrays`` over the leading axis.

    Each call gets ``step`` real examples (fewer in the last call) padded to ``chunk`` rows by
    repeating the chunk's first row, so one compiled shape serves every call; ``idx`` (chunk,)
    int32 are the rows' global indices and ``real`` the number of real rows. Outputs are trimmed
    to the real rows along ``out_axis`` and concatenated on the host. The next chunk is dispatched
    before the previous one is fetched, so host and device overlap.
    """
    n = len(arrays[0])
    num_chunks = -(-n // step)
    outs, pending = [], None
    bar = tqdm(total=n, desc=desc, unit="ex", disable=not progress or num_chunks == 1, leave=False)

    def fetch(result, real):
        outs.append(tuple(np.take(np.asarray(a), np.arange(real), axis=out_axis) for a in result))
        bar.update(real)

    for c in range(num_chunks):
        start, stop = c * step, min((c + 1) * step, n)
        real, pad = stop - start, chunk - (stop - start)
        parts = [a[start:stop] for a in arrays]
        if pad:
            parts = [np.concatenate([p, np.repeat(p[:1], pad, axis=0)]) for p in parts]
        idx = np.arange(start, start + chunk, dtype=np.int32)
        result = fn(*parts, idx, real)
        if pending is not None:
            fetch(*pending)
        pending = (result, real)
    fetch(*pending)
    bar.close()
    return tuple(np.concatenate([o[i] for o in outs], axis=out_axis) for i in range(len(outs[0])))
