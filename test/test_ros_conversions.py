"""Message <-> numpy conversions of the ROS layer (no ROS graph needed)."""
from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("rclpy")

from geometry_msgs.msg import PoseStamped, Quaternion, TransformStamped  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointField  # noqa: E402
from visualization_msgs.msg import Marker  # noqa: E402

from core3d_ros.core.camera import CameraIntrinsics, decode_depth  # noqa: E402
from core3d_ros.core.objects import MapSnapshot, ObjectInfo, OrientedBox  # noqa: E402
from core3d_ros.core.transforms import quaternion_matrix  # noqa: E402
from core3d_ros.ros import conversions as conv  # noqa: E402

RNG = np.random.default_rng(0)


def _rgb(h: int = 5, w: int = 7) -> np.ndarray:
    return RNG.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


# --------------------------------------------------------------------------- colour


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
@pytest.mark.parametrize("pad", [0, 3])
def test_colour_round_trip(encoding: str, pad: int) -> None:
    rgb = _rgb()
    row = rgb.shape[1] * conv.COLOR_ENCODINGS[encoding][1]
    msg = conv.rgb_to_image(rgb, encoding, step=row + pad)
    assert msg.encoding == encoding and msg.step == row + pad
    assert len(msg.data) == msg.height * msg.step
    out = conv.image_to_rgb(msg)
    assert out.dtype == np.uint8 and out.shape == rgb.shape
    np.testing.assert_array_equal(out, rgb)


def test_channel_order_is_respected() -> None:
    rgb = np.zeros((1, 1, 3), np.uint8)
    rgb[0, 0] = (10, 20, 30)
    bgr = conv.array_to_image(np.array([[[30, 20, 10]]], np.uint8), "bgr8")
    assert conv.image_to_rgb(bgr)[0, 0].tolist() == [10, 20, 30]
    bgra = conv.array_to_image(np.array([[[30, 20, 10, 7]]], np.uint8), "bgra8")
    assert conv.image_to_rgb(bgra)[0, 0].tolist() == [10, 20, 30]


def test_mono8_round_trip_gives_grey_rgb() -> None:
    grey = RNG.integers(0, 256, size=(4, 6), dtype=np.uint8)
    msg = conv.array_to_image(grey, "mono8", step=8)
    out = conv.image_to_rgb(msg)
    assert out.shape == (4, 6, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], grey)
    # rgb -> mono8 is luma
    msg = conv.rgb_to_image(np.full((2, 2, 3), 200, np.uint8), "mono8")
    assert np.all(conv.image_to_rgb(msg) == 200)


# --------------------------------------------------------------------------- depth


@pytest.mark.parametrize("encoding", ["16UC1", "mono16", "32FC1"])
@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("pad", [0, 2])
def test_depth_round_trip(encoding: str, bigendian: bool, pad: int) -> None:
    depth = RNG.uniform(0.3, 4.0, size=(6, 5)).astype(np.float32)
    depth[0, 0] = 0.0  # invalid stays invalid
    itemsize = 4 if encoding == "32FC1" else 2
    msg = conv.depth_to_image(depth, encoding, depth_scale=1000.0, step=5 * itemsize + pad, bigendian=bigendian)
    assert msg.is_bigendian == int(bigendian)
    raw = conv.image_to_depth_raw(msg)
    assert raw.dtype == (np.float32 if encoding == "32FC1" else np.uint16)
    assert raw.dtype.isnative
    out = decode_depth(raw, msg.encoding, depth_scale=1000.0, min_depth=0.1, max_depth=5.0)
    tol = 1e-6 if encoding == "32FC1" else 0.0006
    np.testing.assert_allclose(out, depth, atol=tol)
    assert out[0, 0] == 0.0


def test_big_endian_16uc1_bytes_decoded() -> None:
    msg = Image(height=1, width=2, encoding="16UC1", is_bigendian=1, step=4)
    msg.data = bytes([0x03, 0xE8, 0x07, 0xD0])  # 1000, 2000 big-endian
    assert conv.image_to_depth_raw(msg).tolist() == [[1000, 2000]]
    msg.is_bigendian = 0
    assert conv.image_to_depth_raw(msg).tolist() == [[0xE803, 0xD007]]


def test_depth_16uc1_clips_and_zeroes_invalid() -> None:
    depth = np.array([[np.nan, -1.0, 70.0, 1.2345]], np.float32)
    raw = conv.image_to_depth_raw(conv.depth_to_image(depth, "16UC1"))
    assert raw.tolist() == [[0, 0, 65535, 1234]] or raw.tolist() == [[0, 0, 65535, 1235]]


def test_nan_depth_decodes_to_invalid() -> None:
    depth = np.full((3, 3), np.nan, np.float32)
    out = decode_depth(conv.image_to_depth_raw(conv.depth_to_image(depth, "32FC1")), "32FC1")
    assert np.all(out == 0)


def test_instance_round_trip() -> None:
    ids = RNG.integers(0, 70000, size=(4, 5)).astype(np.int32)
    out = conv.image_to_instances(conv.instances_to_image(ids))
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, ids)


# --------------------------------------------------------------------------- malformed images


def _good() -> Image:
    return conv.rgb_to_image(_rgb(4, 4))


def test_short_data_rejected() -> None:
    msg = _good()
    msg.data = bytes(msg.data)[:-1]
    with pytest.raises(conv.ImageError, match="bytes"):
        conv.image_to_rgb(msg)


def test_long_data_rejected() -> None:
    msg = _good()
    msg.data = bytes(msg.data) + b"\0"
    with pytest.raises(conv.ImageError):
        conv.image_to_rgb(msg)


def test_step_shorter_than_row_rejected() -> None:
    msg = _good()
    msg.step = 4 * 3 - 1
    with pytest.raises(conv.ImageError, match="step"):
        conv.image_to_rgb(msg)


@pytest.mark.parametrize("encoding", ["yuv422", "8UC3", "", "bayer_rggb8"])
def test_unknown_encoding_rejected(encoding: str) -> None:
    msg = _good()
    msg.encoding = encoding
    with pytest.raises(conv.ImageError, match="encoding"):
        conv.image_to_rgb(msg)


def test_depth_encoding_on_colour_path_rejected_and_vice_versa() -> None:
    depth = conv.depth_to_image(np.ones((2, 2), np.float32))
    with pytest.raises(conv.ImageError):
        conv.image_to_rgb(depth)
    with pytest.raises(conv.ImageError):
        conv.image_to_depth_raw(_good())


def test_empty_image_rejected() -> None:
    with pytest.raises(conv.ImageError, match="empty"):
        conv.image_to_rgb(Image(height=0, width=0, encoding="rgb8", step=0))


def test_image_error_is_value_error() -> None:
    assert issubclass(conv.ImageError, ValueError)


# --------------------------------------------------------------------------- camera info


def test_camera_info_round_trip() -> None:
    intr = CameraIntrinsics(320, 240, 300.0, 301.0, 159.5, 119.5)
    msg = conv.intrinsics_to_camera_info(intr, stamp=1.5, frame_id="cam")
    assert conv.camera_info_to_intrinsics(msg) == intr
    assert msg.header.frame_id == "cam" and msg.header.stamp.sec == 1 and msg.header.stamp.nanosec == 500_000_000


def test_camera_info_zero_k_rejected() -> None:
    msg = CameraInfo(width=320, height=240)
    with pytest.raises(conv.CameraInfoError, match="all-zero"):
        conv.camera_info_to_intrinsics(msg)


def test_camera_info_bad_focal_rejected() -> None:
    msg = conv.intrinsics_to_camera_info(CameraIntrinsics(320, 240, 300.0, 300.0, 160.0, 120.0))
    k = list(msg.k)
    k[0] = float("nan")
    msg.k = k
    with pytest.raises(conv.CameraInfoError):
        conv.camera_info_to_intrinsics(msg)


# --------------------------------------------------------------------------- poses


def _random_pose() -> np.ndarray:
    q = RNG.normal(size=4)
    q /= np.linalg.norm(q)
    T = np.eye(4)
    T[:3, :3] = quaternion_matrix(*q)
    T[:3, 3] = RNG.normal(size=3)
    return T


def test_pose_round_trips() -> None:
    for _ in range(20):
        T = _random_pose()
        ps = PoseStamped(pose=conv.matrix_to_pose(T))
        np.testing.assert_allclose(conv.pose_message_to_matrix(ps), T, atol=1e-9)
        odom = Odometry()
        odom.pose.pose = conv.matrix_to_pose(T)
        np.testing.assert_allclose(conv.pose_message_to_matrix(odom), T, atol=1e-9)
        ts = TransformStamped(transform=conv.matrix_to_transform(T))
        np.testing.assert_allclose(conv.pose_message_to_matrix(ts), T, atol=1e-9)


def test_quaternion_normalised() -> None:
    ps = PoseStamped()
    ps.pose.orientation = Quaternion(x=0.0, y=0.0, z=2.0, w=2.0)  # 90 deg about z, norm 2.83
    T = conv.pose_message_to_matrix(ps)
    np.testing.assert_allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(T[:3, :3], [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)


@pytest.mark.parametrize(
    "q", [(0.0, 0.0, 0.0, 0.0), (math.nan, 0.0, 0.0, 1.0), (0.0, math.inf, 0.0, 1.0)]
)
def test_bad_quaternion_rejected(q: tuple[float, float, float, float]) -> None:
    ps = PoseStamped()
    ps.pose.orientation = Quaternion(x=q[0], y=q[1], z=q[2], w=q[3])
    with pytest.raises(conv.PoseError, match="quaternion"):
        conv.pose_message_to_matrix(ps)
    ts = TransformStamped()
    ts.transform.rotation = Quaternion(x=q[0], y=q[1], z=q[2], w=q[3])
    with pytest.raises(conv.PoseError, match="quaternion"):
        conv.pose_message_to_matrix(ts)


def test_nan_position_rejected() -> None:
    ps = PoseStamped()
    ps.pose.orientation.w = 1.0
    ps.pose.position.x = math.nan
    with pytest.raises(conv.PoseError):
        conv.pose_message_to_matrix(ps)


def test_time_conversion() -> None:
    t = conv.to_time(12.9999999999)
    assert (t.sec, t.nanosec) == (13, 0)
    t = conv.to_time(3.25)
    assert (t.sec, t.nanosec) == (3, 250_000_000)
    assert conv.to_seconds(conv.to_time(1234.5678)) == pytest.approx(1234.5678, abs=1e-9)


# --------------------------------------------------------------------------- map outputs


def _snapshot(n: int = 3) -> MapSnapshot:
    objs = []
    for k in range(n):
        pts = RNG.normal(size=(50 + 10 * k, 3)).astype(np.float32) * 0.1 + k
        cols = RNG.integers(0, 256, size=(len(pts), 3), dtype=np.uint8)
        objs.append(
            ObjectInfo(
                id=k + 1,
                points=pts,
                colors=cols,
                box=OrientedBox.from_points(pts),
                num_observations=3,
                first_seen=1.0,
                last_seen=2.5,
                label="chair" if k else "",
                label_score=0.3,
            )
        )
    return MapSnapshot(objects=objs, frames=5)


def test_point_cloud_layout() -> None:
    snap = _snapshot()
    msg = conv.snapshot_to_cloud(snap, frame_id="map", stamp=2.0)
    n = sum(len(o.points) for o in snap.objects)
    assert [f.name for f in msg.fields] == ["x", "y", "z", "rgb"]
    assert [f.offset for f in msg.fields] == [0, 4, 8, 12]
    assert all(f.datatype == PointField.FLOAT32 and f.count == 1 for f in msg.fields)
    assert msg.point_step == 16 and msg.row_step == 16 * n
    assert msg.height == 1 and msg.width == n
    assert len(msg.data) == 16 * n
    assert msg.header.frame_id == "map"
    pts, rgb = conv.cloud_to_arrays(msg)
    np.testing.assert_allclose(pts, np.concatenate([o.points for o in snap.objects]))
    start = 0
    for o in snap.objects:  # every point of an object has the object's instance colour
        block = rgb[start : start + len(o.points)]
        assert np.all(block == np.array(conv.instance_color(o.id), np.uint8))
        start += len(o.points)


def test_empty_cloud() -> None:
    msg = conv.snapshot_to_cloud(MapSnapshot(), frame_id="map")
    assert msg.width == 0 and len(msg.data) == 0 and msg.point_step == 16


def test_instance_colours_deterministic_and_distinct() -> None:
    colours = [conv.instance_color(i) for i in range(1, 40)]
    assert colours == [conv.instance_color(i) for i in range(1, 40)]
    assert len(set(colours)) == len(colours)


@pytest.mark.parametrize("style", ["line_list", "cube"])
def test_markers(style: str) -> None:
    snap = _snapshot(3)
    arr = conv.snapshot_to_markers(snap, frame_id="map", stamp=1.0, style=style)
    assert len(arr.markers) == 1 + 2 * len(snap.objects)
    assert arr.markers[0].action == Marker.DELETEALL
    boxes = [m for m in arr.markers if m.ns.endswith("boxes")]
    texts = [m for m in arr.markers if m.type == Marker.TEXT_VIEW_FACING]
    assert len(boxes) == len(texts) == 3
    assert [m.id for m in boxes] == [o.id for o in snap.objects]  # stable ids per object
    assert texts[1].text == "2 chair" and texts[0].text == "1"
    for m in boxes:
        if style == "line_list":
            assert m.type == Marker.LINE_LIST and len(m.points) == 24
        else:
            assert m.type == Marker.CUBE and m.scale.x > 0
    again = conv.snapshot_to_markers(snap, frame_id="map", stamp=2.0, style=style)
    assert [(m.ns, m.id) for m in again.markers] == [(m.ns, m.id) for m in arr.markers]


def test_line_list_box_corners() -> None:
    box = OrientedBox(center=np.array([1.0, 2.0, 3.0]), rotation=np.eye(3), extent=np.array([2.0, 4.0, 6.0]))
    corners = conv.box_corners(box)
    np.testing.assert_allclose(corners.min(axis=0), [0, 0, 0])
    np.testing.assert_allclose(corners.max(axis=0), [2, 4, 6])


def test_query_markers() -> None:
    snap = _snapshot(2)
    arr = conv.query_markers([(snap.objects[1], 0.9), (snap.objects[0], 0.4)], frame_id="map")
    assert arr.markers[0].action == Marker.DELETEALL
    assert len(arr.markers) == 1 + 3 * 2
    assert {m.ns for m in arr.markers[1:]} == {"core3d_query/boxes", "core3d_query/outlines", "core3d_query/labels"}
    labels = [m.text for m in arr.markers if m.type == Marker.TEXT_VIEW_FACING]
    assert labels[0].startswith("#1 chair 2")


def test_object_messages() -> None:
    pytest.importorskip("core3d.msg", reason="core3d interfaces not built (run scripts/setup.sh)")
    snap = _snapshot(2)
    arr = conv.snapshot_to_object_array(snap, frame_id="map", stamp=3.0)
    assert len(arr.objects) == 2 and arr.header.frame_id == "map"
    o, src = arr.objects[1], snap.objects[1]
    assert o.id == src.id and o.label == "chair" and o.num_voxels == len(src.points)
    assert o.num_observations == 3
    assert conv.to_seconds(o.last_seen) == pytest.approx(2.5)
    np.testing.assert_allclose([o.centroid.x, o.centroid.y, o.centroid.z], src.centroid, atol=1e-5)
    np.testing.assert_allclose([o.box_size.x, o.box_size.y, o.box_size.z], src.box.extent, atol=1e-6)
    R = conv.pose_message_to_matrix(PoseStamped(pose=o.box_pose))[:3, :3]
    np.testing.assert_allclose(np.abs(R), np.abs(src.box.rotation), atol=1e-6)
    assert 0.0 <= o.color.r <= 1.0 and o.color.a == 1.0
