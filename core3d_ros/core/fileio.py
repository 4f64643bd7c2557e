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
    remove_stale_temp_files(path)
    # the writer's pid in the name: a later writer can tell a dead writer's file from a live one
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def remove_stale_temp_files(path: str | os.PathLike) -> list[str]:
    """Remove the temporary files that writers of ``path`` which no longer run left beside it
    (a process killed mid-write); a live writer's file is kept. Returns the names removed."""
    path = Path(path)
    prefix = f".{path.name}."
    removed = []
    try:
        names = [e.name for e in os.scandir(path.parent) if e.name.startswith(prefix) and e.is_file(follow_symlinks=False)]
    except OSError:
        return removed
    for name in names:
        pid = name[len(prefix):].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            try:
                os.unlink(path.parent / name)
                removed.append(name)
            except OSError:
                pass
    return removed


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> str:
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return str(path)
