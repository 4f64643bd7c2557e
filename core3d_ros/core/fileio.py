"""Atomic file output: write to a temporary file beside the target, then rename over it."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_output(path: str | os.PathLike, suffix: str = ".tmp", mode: int = 0o644) -> Iterator[str]:
    """Yield a temporary path in the target's folder; on success it replaces ``path``.

    Readers never see a half-written file; on any error the temporary file is removed and the
    previous file, if any, is left untouched. ``suffix`` lets writers that pick the format by
    extension (Open3D) see the right one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> str:
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return str(path)
