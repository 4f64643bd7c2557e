"""core3d/srv/Query responses: the model-step fields of a QueryAnswer."""
from __future__ import annotations

from typing import Any

import numpy as np
from builtin_interfaces.msg import Time

from ...core.objects import ObjectInfo
from .images import rgb_to_image


def fill_query_stages(resp: Any, answer: Any, top: ObjectInfo | None, *, stamp: Time | float = 0.0) -> None:
    """Set a core3d/srv/Query response's model-step fields from a QueryAnswer: ``stages``,
    ``stage_status``, ``stage_detail`` (parallel arrays, one entry per step tried), ``reason``,
    and ``top_view`` (rgb8 best view of the top result ``top``, left empty when it has none)."""
    stages = list(getattr(answer, "stages", None) or [])
    resp.stages = [str(s.name) for s in stages]
    resp.stage_status = [str(s.status) for s in stages]
    resp.stage_detail = [str(s.detail) for s in stages]
    resp.reason = str(getattr(answer, "reason", "") or "")
    view = getattr(top, "best_view", None) if top is not None else None
    if view is not None:
        v = np.asarray(view)
        if v.ndim == 3 and v.shape[2] >= 3 and v.dtype == np.uint8 and min(v.shape[:2]) > 0:
            resp.top_view = rgb_to_image(np.ascontiguousarray(v[:, :, :3]), stamp=stamp, frame_id=f"core3d_object_{top.id}")
