"""Where map files may be read and written: a configured maps directory, nothing else by default.

The node's save_map / load_map services take a path from any process on the ROS graph, so the
path is checked before a byte is read or written:

- a relative name resolves inside the maps directory (``ros.maps_dir``, default
  ``~/.ros/core3d/maps``); ``~`` is expanded;
- the resolved file, with every symlink followed, must lie inside the maps directory (also
  resolved), so ``../``, absolute paths elsewhere and symlinks pointing out are refused, unless
  ``allow_any`` (``ros.allow_any_map_path``) is set;
- whatever ``allow_any`` says, an existing target must be a regular file: device files, FIFOs,
  sockets and directories are always refused;
- a file to be written gets the map suffix (``.npz``) when it lacks it, before the checks, so
  ``/dev/null`` cannot become a write to ``/dev/null`` nor ``x`` a write beside the check.

ROS-free: the node and offline tools share it.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MAPS_DIR = "~/.ros/core3d/maps"
MAP_SUFFIX = ".npz"


class MapPathError(ValueError):
    """A map path that the policy refuses; the message says why and which parameter allows it."""


@dataclass(frozen=True)
class MapPathPolicy:
    maps_dir: str = DEFAULT_MAPS_DIR
    allow_any: bool = False

    @property
    def root(self) -> Path:
        """The maps directory, ``~`` expanded and symlinks resolved."""
        return Path(os.path.realpath(os.path.expanduser(self.maps_dir)))

    def resolve(self, requested: str, suffix: str = "") -> Path:
        """The checked path (it may not exist); MapPathError when the policy refuses it."""
        return self._resolve(requested, suffix)

    def resolve_for_write(self, requested: str, suffix: str = MAP_SUFFIX) -> Path:
        """The path a map may be written to (parents inside the maps directory are created)."""
        path = self._resolve(requested, suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def resolve_for_read(self, requested: str) -> Path:
        """The path of an existing map file to read (MapPathError when refused or missing)."""
        path = self._resolve(requested, "")
        if not path.exists():
            raise MapPathError(f"no map file at {path}")
        return path

    # ------------------------------------------------------------------ internals

    def _inside(self, path: Path) -> bool:
        root = self.root
        return path == root or root in path.parents

    def _resolve(self, requested: str, suffix: str) -> Path:
        text = str(requested).strip()
        if not text:
            raise MapPathError("empty map path")
        if "\x00" in text:
            raise MapPathError("map path contains a NUL character")
        given = Path(os.path.expanduser(text))
        if given.name in ("", ".", "..") or text.endswith(("/", "/.")):
            raise MapPathError(f"map path {text!r} does not name a file")
        if suffix and given.suffix != suffix:
            given = given.with_name(given.name + suffix)
        full = given if given.is_absolute() else Path(os.path.expanduser(self.maps_dir)) / given
        real = Path(os.path.realpath(full))  # follows every symlink, also one at the end
        if not self.allow_any and not self._inside(real):
            via = f" (through a symlink: {full} -> {real})" if os.path.normpath(full) != str(real) else ""
            raise MapPathError(
                f"map path {text!r} resolves to {real}{via}, outside the maps directory {self.root}; "
                "use a name inside ros.maps_dir, or set ros.allow_any_map_path to true"
            )
        try:
            st = os.stat(real)
        except FileNotFoundError:
            return real
        except OSError as e:
            raise MapPathError(f"cannot inspect map path {real}: {e.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file (a device, FIFO or socket)"
            raise MapPathError(f"map path {real} is {kind}; map files must be regular files")
        return real
