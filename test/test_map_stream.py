"""The map stream's messages (ros/conversions/map_stream.py): ObjectInfo -> core3d/ObjectState ->
the mirror's StreamedObject, and core3d/MapUpdate -> MapVersion."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("core3d.msg", reason="core3d interfaces not built (run scripts/setup.sh, then scripts/in-env)")

from core3d_ros.core.objects import ObjectInfo, OrientedBox  # noqa: E402
from core3d_ros.ros.conversions.map_stream import (  # noqa: E402
    map_update_msg, msg_to_map_version, object_state_to_msg, sample_rows,
)


def mapped_object(oid: int = 7, n: int = 100, dim: int = 16) -> ObjectInfo:
    rng = np.random.default_rng(oid)
    pts = (rng.normal(size=(n, 3)) * [0.3, 0.1, 0.05] + [1, 2, 0.5]).astype(np.float32)
    emb = rng.normal(size=dim).astype(np.float32)
    return ObjectInfo(
        id=oid, points=pts, colors=rng.integers(0, 256, size=(n, 3), dtype=np.uint8),
        box=OrientedBox.from_points(pts, up=np.array([0, 0, 1.0])), num_observations=3,
        first_seen=1.5, last_seen=4.25, embedding=emb / np.linalg.norm(emb), label="mug", label_score=0.3,
    )


@pytest.mark.parametrize("n, cap, kept", [(10, 2000, 10), (2000, 2000, 2000), (2001, 2000, 1001), (10, 3, 3)])
def test_the_voxel_sample_is_bounded(n: int, cap: int, kept: int) -> None:
    assert len(range(n)[sample_rows(n, cap)]) == kept <= cap


def test_an_object_round_trips_with_its_summary_and_a_bounded_sample() -> None:
    obj = mapped_object(n=500)
    obj.moved_from, obj.moved_at = np.array([0.5, 1.0, -0.25]), 3.0
    state = object_state_to_msg(obj, max_sample=100)
    assert len(state.sample_points) == 3 * 100 and len(state.sample_colors) == 3 * 100
    assert len(state.embedding_fp16) == 16
    update = map_update_msg(
        frame_id="map", stamp=2.0, map_id="/m", generation=5, seq=3, full=False, voxel_size=0.025, frames=9,
        objects=[state], removed=[4, 5], viewpoint=np.eye(4),
    )
    v = msg_to_map_version(update)
    assert (v.map_id, v.generation, v.seq, v.full, v.frames, v.removed) == ("/m", 5, 3, False, 9, [4, 5])
    assert v.stamp == pytest.approx(2.0) and v.voxel_size == pytest.approx(0.025)
    assert np.allclose(v.viewpoint, np.eye(4))
    got = v.objects[0]
    assert got.id == 7 and got.label == "mug" and got.num_observations == 3
    assert got.num_voxels == 500  # the whole object's, not the sample's
    assert np.allclose(got.centroid, obj.centroid, atol=1e-6)
    assert np.allclose(got.mean_color, obj.mean_color, atol=1e-6)
    assert got.points.shape == (100, 3) and got.colors.shape == (100, 3)
    assert np.allclose(got.embedding, obj.embedding, atol=2e-3)  # fp16
    assert np.allclose(got.box.center, obj.box.center, atol=1e-6)
    assert np.allclose(got.box.extent, obj.box.extent, atol=1e-6)
    assert np.allclose(np.abs(got.box.rotation.T @ obj.box.rotation), np.eye(3), atol=1e-6)
    assert (got.first_seen, got.last_seen) == pytest.approx((1.5, 4.25))
    assert np.allclose(got.moved_from, [0.5, 1.0, -0.25]) and got.moved_at == pytest.approx(3.0)


def test_an_unusable_box_orientation_becomes_a_nan_box_for_the_mirror() -> None:
    state = object_state_to_msg(mapped_object(), max_sample=10)
    state.object.box_pose.orientation.w = float("nan")
    update = map_update_msg(
        frame_id="map", stamp=0.0, map_id="/m", generation=1, seq=1, full=False, voxel_size=0.025, frames=0,
        objects=[state],
    )
    assert not np.all(np.isfinite(msg_to_map_version(update).objects[0].box.rotation))
