"""One registry type for everything chosen by name: segmenters, encoders, dataset readers,
query answerers.

    SEGMENTERS = Registry("segmenter", "segmenter.name")      # in segment/base.py

    @SEGMENTERS.register("geometric")                         # in segment/geometric.py
    def _make(cfg): ...

    SEGMENTERS.create("geometric", cfg)   # unknown names raise BackendError listing the known ones

A back-end registers itself when its module is imported; the package's ``__init__`` imports its
back-ends, so the module holding the registry imports none of them. Back-ends import their heavy
packages (torch, open_clip, segment_anything) only when built. ``register`` may keep facts
about an entry beside its factory (a dataset reader's ``detect`` predicate); ``info`` returns them.
"""
from __future__ import annotations

from typing import Any, Callable, Generic, Sequence, TypeVar

from ..config import ConfigError

T = TypeVar("T", bound=Callable)


class BackendError(ConfigError, RuntimeError):
    """A back-end cannot be built from its configuration: unknown name, missing package or
    checkpoint, unavailable device. The message names the parameter to change. It is a
    ConfigError, so nodes and the ``core3d`` command report it in one line at start-up."""


class Registry(Generic[T]):
    def __init__(
        self, kind: str, param: str, *, error: type[Exception] = BackendError, also: Sequence[str] = ()
    ):
        self.kind = kind  # "segmenter", "encoder", ...
        self.param = param  # the parameter that names an entry
        self.error = error  # raised for an unknown name
        self.also = tuple(also)  # names the caller handles itself ("none", "auto"), listed as available
        self._factories: dict[str, T] = {}
        self._info: dict[str, dict[str, Any]] = {}

    def register(self, name: str, **info: Any) -> Callable[[T], T]:
        def wrap(factory: T) -> T:
            self._factories[name] = factory
            self._info[name] = info
            return factory

        return wrap

    def names(self) -> list[str]:
        return sorted(self._factories)

    def __contains__(self, name: str) -> bool:
        return name in self._factories

    def get(self, name: str) -> T:
        try:
            return self._factories[name]
        except KeyError:
            raise self.error(
                f"unknown {self.kind} {name!r} (parameter {self.param}); available: {[*self.also, *self.names()]}"
            ) from None

    def info(self, name: str) -> dict[str, Any]:
        """What was registered beside the factory of ``name``."""
        self.get(name)
        return self._info[name]

    def create(self, name: str, *args, **kwargs):
        return self.get(name)(*args, **kwargs)
