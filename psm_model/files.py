"""Atomic file writes for caches, checkpoints and shards.

A reader never sees half a file, and two processes that write the same file at once (two training
runs sharing a feature cache, say) each write their own temporary file, so neither can move the
other's away or trip over it. The last one to finish wins; both results are whole.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_write(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a fresh temporary path beside ``path``; on a clean exit move it onto ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was.

    Args:
        path: The file to write.
        suffix: Ending of the temporary name, for writers that insist on one (``np.save`` appends
            ``.npy`` to a name without it, ``np.savez`` ``.npz``).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # A unique name, left for the writer to create, so the file gets the usual permissions
    # (mkstemp would make it readable by its owner only, and a worker of another user could not load it).
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}{suffix}")
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


__all__ = ["atomic_write"]
