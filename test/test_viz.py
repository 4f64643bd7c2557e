"""The top-down picture: structure in grey, objects in colour with non-overlapping labels,
a scale bar and a legend."""
from __future__ import annotations

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from core3d_ros.core.objects import MapSnapshot, ObjectInfo, OrientedBox  # noqa: E402
from core3d_ros.tools.viz import (  # noqa: E402
    STRUCTURE_COLORS,
    instance_color,
    place_labels,
    render_topdown,
    structure_kind,
    write_topdown_png,
)

VOXEL = 0.05


def box_object(oid: int, lo, hi, label: str = "") -> ObjectInfo:
    axes = [np.arange(a, b + 1e-9, VOXEL) for a, b in zip(lo, hi)]
    pts = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3).astype(np.float32)
    return ObjectInfo(
        id=oid,
        points=pts,
        colors=np.full((len(pts), 3), 128, np.uint8),
        box=OrientedBox.from_points(pts, up=np.array([0.0, 0.0, 1.0])),
        num_observations=3,
        first_seen=0.0,
        last_seen=1.0,
        label=label,
    )


def room() -> list[ObjectInfo]:
    return [
        box_object(1, (0, 0, 0), (4, 3, 0.0)),  # floor (flat, 12 m^2)
        box_object(2, (0, 3, 0), (4, 3.05, 2.5)),  # wall along x
        box_object(3, (0, 0, 2.5), (4, 3, 2.5)),  # ceiling (flat, at the top)
        box_object(4, (1, 1, 0.05), (1.5, 1.5, 0.8), "table"),
        box_object(5, (1.1, 1.1, 0.85), (1.2, 1.2, 0.95), "mug"),  # on the table: same spot
        box_object(6, (1.15, 1.15, 0.85), (1.25, 1.25, 1.0), "bottle"),
        box_object(7, (3, 0.2, 0.05), (3.5, 2.0, 1.0), "wall"),  # labelled structure wins
    ]


def test_structure_by_shape_and_label():
    objs = room()
    kinds = {o.id: structure_kind(o, all_objects=objs) for o in objs}
    assert kinds == {1: "floor", 2: "wall", 3: "ceiling", 4: None, 5: None, 6: None, 7: "wall"}


def test_labels_never_overlap_and_stay_inside():
    anchors = [(100.0, 100.0)] * 12 + [(5.0, 5.0), (395.0, 295.0)]
    sizes = [(60, 14)] * 14
    rects = place_labels(anchors, sizes, 400, 300)
    got = [r for r in rects if r is not None]
    assert len(got) == 14
    for i, a in enumerate(got):
        assert 0 <= a[0] and 0 <= a[1] and a[2] < 400 and a[3] < 300
        for b in got[i + 1 :]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)
    # no room left: reported, not drawn on top of another label
    assert place_labels([(10.0, 10.0)] * 3, [(380, 280)] * 3, 400, 300)[1:] == [None, None]


def test_picture_has_grey_structure_coloured_objects_scale_and_legend(tmp_path):
    snap = MapSnapshot(objects=room(), voxel_size=VOXEL)
    size = 600
    img = render_topdown(snap, size=size)
    assert img.shape == (size, size + 260, 3)
    canvas, legend = img[:, :size], img[:, size:]

    def count(region, rgb):
        return int(np.all(region == np.array(rgb, np.uint8), axis=2).sum())

    assert count(canvas, STRUCTURE_COLORS["floor"]) > 0.2 * size * size * 0.5  # the floor is drawn, grey
    assert count(canvas, STRUCTURE_COLORS["wall"]) > 100
    for oid in (4, 5, 6):  # each object visible in its colour, and listed in the legend
        assert count(canvas, instance_color(oid)) > 0, oid
        assert count(legend, instance_color(oid)) > 50, oid
    assert count(canvas, instance_color(1)) == 0  # structure is not drawn in instance colours
    # scale bar: a black horizontal line near the bottom-left corner
    bottom = canvas[size - 30 :, : size // 2]
    assert (np.all(bottom == 0, axis=2).sum(axis=1) > 50).any()
    path = write_topdown_png(snap, tmp_path / "map.png")
    back = cv2.imread(str(path))[:, :, ::-1]
    np.testing.assert_array_equal(back, render_topdown(snap))


def test_empty_map():
    img = render_topdown(MapSnapshot(objects=[]), size=200)
    assert img.shape[0] == 200 and (img < 255).any()


def test_top_view_follows_the_up_direction():
    """A 7-Scenes-like map (up = -y): the picture is the x-z plane, its arrow says which axis."""
    from core3d_ros.tools.viz import _axis_name, _ground_frame

    P = _ground_frame((0.0, -1.0, 0.0))
    assert np.allclose(P.T @ [0.0, -1.0, 0.0], 0.0) and np.allclose(P.T @ P, np.eye(2))
    assert _axis_name(P[:, 1]) in ("+x", "-x", "+z", "-z")
    assert _axis_name(_ground_frame((0.0, 0.0, 1.0))[:, 1]) == "y"
    assert _axis_name(np.array([0.6, 0.8, 0.0])) == ""
    # a floor lying in the x-z plane fills the picture seen along -y, a line seen along z
    floor = box_object(1, (0, 0, 0), (4, 0.0, 3))
    seen_down_y = render_topdown(MapSnapshot(objects=[floor], stamp=0.0, voxel_size=VOXEL), up=(0.0, -1.0, 0.0))
    seen_down_z = render_topdown(MapSnapshot(objects=[floor], stamp=0.0, voxel_size=VOXEL), up=(0.0, 0.0, 1.0))
    drawn = lambda img: int(np.count_nonzero(np.any(img[:, :900] != 255, axis=2)))  # noqa: E731
    assert drawn(seen_down_y) > 10 * drawn(seen_down_z)


def test_top_view_outlines_rooms():
    from core3d_ros.core.hierarchy.graph import Room

    snap = MapSnapshot(objects=room(), stamp=0.0, voxel_size=VOXEL)
    outline = np.array([[0.2, 0.2, 0.0], [3.8, 0.2, 0.0], [3.8, 2.8, 0.0], [0.2, 2.8, 0.0]])
    r = Room(id=1, floor_id=1, outline=outline, area=9.4, centroid=np.array([2.0, 1.5, 0.0]), label="kitchen")
    plain = render_topdown(snap)
    with_room = render_topdown(snap, rooms=[r])
    blue = lambda img: int(np.count_nonzero(np.all(img == (30, 50, 160), axis=2)))  # noqa: E731
    assert blue(plain) == 0 and blue(with_room) > 500
