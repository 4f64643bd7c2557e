"""What the mapping node's parts need from the mapper and the query engine (structural types).

``core.mapper.Mapper`` and ``core.retrieval`` (QueryEngine, LlmRetriever) satisfy them; tests
pass small fakes that implement only what their test touches. Each part names the narrowest
protocol it uses: publishing reads a ``MapView``, the services also save, load and clear a
``MapStore``, the worker and late fusion map frames into a ``FrameMapper``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from ..core.frame import Frame
    from ..core.objects import MapSnapshot
    from ..core.observation import Observation
    from ..core.retrieval.engine import QueryAnswer


class SurfaceLayer(Protocol):
    """The TSDF geometry layer (core.tsdf.GeometryLayer) as the surface publication reads it."""

    voxel_size: float

    def take_dirty(self) -> np.ndarray: ...

    def surface(self, blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


class FrameResult(Protocol):
    """What mapping one frame reports (core.mapper.FrameStats)."""

    keyframe: bool
    timings_ms: dict[str, float]


class MapView(Protocol):
    """Read side: consistent snapshots, the last camera pose, the TSDF layer (None when off)."""

    last_pose: np.ndarray | None
    geometry: SurfaceLayer | None

    def snapshot(self, wait: bool = True) -> MapSnapshot: ...


class MapStore(MapView, Protocol):
    """Map files and reset; each call is atomic against mapping (the mapper's own lock)."""

    def save(self, path: str) -> str: ...

    def load(self, path: str) -> None: ...

    def clear(self) -> None: ...


class FrameMapper(MapStore, Protocol):
    """The whole mapper: inline mapping, or geometry now and observations fused late."""

    encoder: Any  # the text/image encoder, None without one (queries rank by colour and geometry)

    def process(self, frame: Frame) -> FrameResult: ...

    def integrate_geometry(self, frame: Frame) -> Frame: ...

    def fuse_observation(self, frame: Frame, obs: Observation) -> Any: ...


class QueryAnswerer(Protocol):
    """A query engine (QueryEngine, or LlmRetriever around one); raises QueryError for a bad query."""

    def answer(
        self, snapshot: MapSnapshot, text: str, top_k: int | None = None, viewpoint: np.ndarray | None = None, graph: Any = None
    ) -> QueryAnswer: ...
