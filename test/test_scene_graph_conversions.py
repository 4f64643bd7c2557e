"""core3d/SceneGraph <-> SceneGraph, room markers, and Object.room_id (no ROS graph needed)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy")

from visualization_msgs.msg import Marker  # noqa: E402

from core3d_ros.core.hierarchy.graph import SceneGraph  # noqa: E402
from core3d_ros.core.objects import MapSnapshot, ObjectInfo, OrientedBox  # noqa: E402
from core3d_ros.ros.conversions.objects import snapshot_to_object_array  # noqa: E402
from core3d_ros.ros.conversions.scene_graph import (  # noqa: E402
    msg_to_scene_graph, room_markers, room_of_objects, scene_graph_to_msg,
)
from test_mapio_hierarchy import two_room_graph  # noqa: E402


def test_scene_graph_round_trips_through_the_message():
    g = two_room_graph()
    msg = scene_graph_to_msg(g, frame_id="map", stamp=12.5, map_id="m1")
    assert (msg.header.frame_id, msg.header.stamp.sec, msg.header.stamp.nanosec) == ("map", 12, 500_000_000)
    assert (msg.map_id, msg.version, msg.up_source, (msg.up.x, msg.up.y, msg.up.z)) == ("m1", 7, "estimated", (0.0, -1.0, 0.0))
    assert [(f.id, list(f.room_ids)) for f in msg.floors] == [(1, [1, 5]), (2, [])]
    kitchen = msg.rooms[0]
    assert (kitchen.label, list(kitchen.object_ids), list(kitchen.keyframe_ids)) == ("kitchen", [1, 2], [4, 9])
    assert [(p.x, p.y, p.z) for p in kitchen.outline] == [(0, 0, 0), (2, 0, 0), (2, 3, 0), (0, 3, 0)]
    assert kitchen.area == pytest.approx(6.0) and kitchen.label_score == pytest.approx(0.31)
    back = msg_to_scene_graph(msg)
    assert back.version == 7 and back.up.tolist() == [0.0, -1.0, 0.0] and back.up_source == "estimated"
    assert [(f.id, f.height, f.ceiling, f.label, f.room_ids) for f in back.floors] == [
        (1, 0.0, pytest.approx(2.6), "floor 1", [1, 5]), (2, 3.0, 5.5, "floor 2", []),
    ]
    assert [(r.id, r.floor_id, r.label, r.object_ids) for r in back.rooms] == [(1, 1, "kitchen", [1, 2]), (5, 1, "room 5", [])]
    np.testing.assert_allclose(back.rooms[0].outline, g.rooms[0].outline)
    np.testing.assert_allclose(back.rooms[1].centroid, [2.5, 0.5, 0.0])


def test_empty_graph_converts():
    msg = scene_graph_to_msg(SceneGraph(note="no floor surface seen"), frame_id="map")
    assert msg.floors == [] and msg.rooms == [] and msg.note == "no floor surface seen" and msg.up.z == 1.0
    assert msg_to_scene_graph(msg).note == "no floor surface seen"


def test_negative_ids_are_refused():
    g = two_room_graph()
    g.rooms[0].object_ids = [-3]
    with pytest.raises(ValueError, match="uint32"):
        scene_graph_to_msg(g, frame_id="map")


def test_room_markers_outline_every_room_and_name_it():
    ma = room_markers(two_room_graph(), frame_id="map")
    assert ma.markers[0].action == Marker.DELETEALL
    lines = [m for m in ma.markers if m.type == Marker.LINE_STRIP]
    texts = [m for m in ma.markers if m.type == Marker.TEXT_VIEW_FACING]
    assert [m.id for m in lines] == [1, 5] and [m.id for m in texts] == [1, 5]
    kitchen = lines[0]
    # closed: the first corner repeated; lifted 2 cm along up (-y here)
    np.testing.assert_allclose(
        [(p.x, p.y, p.z) for p in kitchen.points], [(0, -0.02, 0), (2, -0.02, 0), (2, 2.98, 0), (0, 2.98, 0), (0, -0.02, 0)]
    )
    assert [t.text for t in texts] == ["kitchen (0.31)", "room 5"]
    assert texts[0].pose.position.y == pytest.approx(1.0)  # centroid 1.5, lifted 0.5 along -y


def _obj(i: int) -> ObjectInfo:
    box = OrientedBox(center=np.zeros(3), extent=np.ones(3), rotation=np.eye(3))
    return ObjectInfo(
        id=i, points=np.zeros((1, 3), np.float32), colors=np.zeros((1, 3), np.uint8), box=box, num_observations=2,
        first_seen=0.0, last_seen=1.0,
    )


def test_objects_carry_their_room():
    rooms = room_of_objects(two_room_graph())
    assert rooms == {1: 1, 2: 1} and room_of_objects(None) == {}
    snap = MapSnapshot(objects=[_obj(1), _obj(2), _obj(3)])
    msg = snapshot_to_object_array(snap, frame_id="map", rooms=rooms)
    assert [(o.id, o.room_id) for o in msg.objects] == [(1, 1), (2, 1), (3, 0)]
