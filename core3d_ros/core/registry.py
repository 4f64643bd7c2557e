"""One registry type for everything chosen by name in config (segmenters, encoders, dataset readers).

    SEGMENTERS = Registry("segmenter", "segmenter.name", load=_import_builtin_segmenters)

    @SEGMENTERS.register("geometric")
    def _make(cfg): ...

    SEGMENTERS.create("geometric", cfg)   # unknown names raise BackendError listing the known ones

``load`` imports the modules whose import registers the built-in entries; it runs once, on the
first look-up, so that heavy optional packages are imported only when a back-end is built.
"""
from __future__ import annotations

import threading
from typing import Callable, Generic, TypeVar

from ..config import ConfigError

T = TypeVar("T", bound=Callable)


class BackendError(ConfigError, RuntimeError):
    """A back-end cannot be built from its configuration: unknown name, missing package or
    checkpoint, unavailable device. The message names the parameter to change. It is a
    ConfigError, so nodes and the ``core3d`` command report it in one line at start-up."""


class Registry(Generic[T]):
    def __init__(self, kind: str, param: str, load: Callable[[], None] | None = None):
        self.kind = kind  # "segmenter", "encoder", ...
        self.param = param  # the config parameter that names an entry
        self._load = load
        self._loaded = load is None
        self._lock = threading.Lock()
        self._factories: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def wrap(factory: T) -> T:
            self._factories[name] = factory
            return factory

        return wrap

    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        with self._lock:
            if not self._loaded:
                assert self._load is not None
                self._load()
                self._loaded = True

    def names(self) -> list[str]:
        self._ensure_loaded()
        return sorted(self._factories)

    def __contains__(self, name: str) -> bool:
        self._ensure_loaded()
        return name in self._factories

    def get(self, name: str) -> T:
        self._ensure_loaded()
        try:
            return self._factories[name]
        except KeyError:
            raise BackendError(
                f"unknown {self.kind} {name!r} (parameter {self.param}); available: {self.names()}"
            ) from None

    def create(self, name: str, *args, **kwargs):
        return self.get(name)(*args, **kwargs)
