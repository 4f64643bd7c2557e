"""Geometric relations, colours and superlatives on constructed objects (z-up, metres)."""
from __future__ import annotations

import numpy as np
import pytest

from core3d_ros.core.objects import ObjectInfo, OrientedBox
from core3d_ros.core.retrieval.colors import COLOR_NAMES, best_color, color_scores, colors_score
from core3d_ros.core.retrieval.relations import (
    Geometry,
    RelationParams,
    between_score,
    make_view,
    pair_scores,
    relation_score,
    superlative_scores,
)


def box_points(lo, hi, step=0.02) -> np.ndarray:
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    axes = [np.arange(a + step / 2, b, step) if b - a > step else np.array([(a + b) / 2]) for a, b in zip(lo, hi)]
    g = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    return g.astype(np.float32)


def make_object(oid, parts, rgb=(128, 128, 128), embedding=None, label="", yaw=0.0) -> ObjectInfo:
    """Object from one or more (lo, hi) boxes, optionally rotated by ``yaw`` about its centre."""
    if isinstance(parts[0][0], (int, float)):
        parts = [parts]
    pts = np.concatenate([box_points(lo, hi) for lo, hi in parts])
    if yaw:
        c = pts.mean(axis=0)
        R = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
        pts = ((pts - c) @ R.T + c).astype(np.float32)
    cols = np.tile(np.array(rgb, np.uint8), (len(pts), 1))
    return ObjectInfo(
        id=oid, points=pts, colors=cols, box=OrientedBox.from_points(pts, up=np.array([0.0, 0.0, 1.0])), num_observations=3,
        first_seen=0.0, last_seen=1.0, embedding=embedding, label=label,
    )


def table(oid=1, x=0.0, y=0.0, w=1.2, d=0.8, h=0.75, **kw) -> ObjectInfo:
    top = ((x - w / 2, y - d / 2, h - 0.04), (x + w / 2, y + d / 2, h))
    legs = [
        ((x + sx * (w / 2 - 0.05) - 0.02, y + sy * (d / 2 - 0.05) - 0.02, 0.0),
         (x + sx * (w / 2 - 0.05) + 0.02, y + sy * (d / 2 - 0.05) + 0.02, h - 0.04))
        for sx in (-1, 1) for sy in (-1, 1)
    ]
    return make_object(oid, [top, *legs], **kw)


def cube(oid, center, size, **kw) -> ObjectInfo:
    c = np.asarray(center, float)
    s = np.broadcast_to(np.asarray(size, float), (3,))
    return make_object(oid, (tuple(c - s / 2), tuple(c + s / 2)), **kw)


def on_floor(oid, x, y, size, **kw) -> ObjectInfo:
    s = np.broadcast_to(np.asarray(size, float), (3,))
    return cube(oid, (x, y, s[2] / 2), s, **kw)


def mug_at(oid, x, y, z0, **kw) -> ObjectInfo:
    return cube(oid, (x, y, z0 + 0.05), (0.08, 0.08, 0.1), **kw)


# ------------------------------------------------------------------------- vertical relations


def test_mug_on_table_not_under():
    t = table()
    mug = mug_at(2, 0.2, 0.1, 0.75)
    assert relation_score("on", mug, t) > 0.8
    assert relation_score("under", mug, t) < 0.05
    assert relation_score("above", mug, t) > 0.8
    assert relation_score("near", mug, t) > 0.9
    # the table is not on the mug
    assert relation_score("on", t, mug) < 0.05


def test_mug_on_floor_is_not_on_table():
    t = table()
    far = mug_at(2, 2.5, 0.0, 0.0)
    assert relation_score("on", far, t) < 0.01
    assert relation_score("near", far, t) < 0.01
    assert relation_score("far_from", far, t) > 0.99


def test_box_under_table():
    t = table()
    box = on_floor(3, 0.1, 0.0, 0.3)
    assert relation_score("under", box, t) > 0.8
    assert relation_score("on", box, t) < 0.01
    beside = on_floor(4, 1.5, 0.0, 0.3)
    assert relation_score("under", beside, t) < 0.01


def test_on_rotated_table_footprint():
    t = table(yaw=np.pi / 4)
    inside = mug_at(2, 0.0, 0.45, 0.75)  # on the rotated top (its corner points along +y)
    outside = mug_at(3, 0.55, 0.55, 0.75)  # inside the axis-aligned bounds, off the rotated top
    assert relation_score("on", inside, t) > 0.5
    assert relation_score("on", outside, t) < 0.05


def test_in_container():
    cabinet = cube(1, (0, 0, 0.5), (0.6, 0.4, 1.0))
    book = cube(2, (0, 0, 0.4), (0.2, 0.15, 0.25))
    out = cube(3, (1.5, 0, 0.4), (0.2, 0.15, 0.25))
    assert relation_score("in", book, cabinet) > 0.9
    assert relation_score("in", out, cabinet) < 0.01
    assert relation_score("in", cabinet, book) < 0.01  # a container is not in its content


# ------------------------------------------------------------------------- near / far


def test_near_soft_threshold():
    a = cube(1, (0, 0, 0.5), 0.2)
    close = cube(2, (0.3, 0, 0.5), 0.2)  # 0.1 m gap
    mid = cube(3, (0.7, 0, 0.5), 0.2)  # 0.5 m gap -> about 0.5
    far = cube(4, (2.0, 0, 0.5), 0.2)
    p = RelationParams(near_distance=0.5, near_softness=0.1)
    s_close, s_mid, s_far = (relation_score("near", o, a, params=p, pad=0.0) for o in (close, mid, far))
    assert s_close > 0.95
    assert 0.3 < s_mid < 0.7
    assert s_far < 0.01
    assert s_close > s_mid > s_far


def test_relation_with_itself_is_zero():
    a = cube(1, (0, 0, 0.5), 0.2)
    g = Geometry([a])
    assert pair_scores("near", g, [0], [0], RelationParams())[0, 0] == 0.0


# ------------------------------------------------------------------------- view relations


def camera_pose(position, look_at, up=(0, 0, 1)) -> np.ndarray:
    """Camera-to-world, OpenCV optical axes (z forward, x right, y down)."""
    p = np.asarray(position, float)
    z = np.asarray(look_at, float) - p
    z /= np.linalg.norm(z)
    x = np.cross(z, np.asarray(up, float))
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = x, y, z, p
    return T


def test_left_right_from_given_viewpoint():
    plate = cube(1, (0, 0, 0.8), (0.25, 0.25, 0.03))
    cup_a = cube(2, (0, 0.3, 0.85), 0.08)  # +y side
    cup_b = cube(3, (0, -0.3, 0.85), 0.08)  # -y side
    # camera at -x looking along +x: +y is on the left
    T = camera_pose((-2, 0, 1.5), (0, 0, 0.8))
    assert relation_score("left_of", cup_a, plate, viewpoint=T) > 0.7
    assert relation_score("right_of", cup_a, plate, viewpoint=T) < 0.01
    assert relation_score("right_of", cup_b, plate, viewpoint=T) > 0.7
    # seen from the other side the sides swap
    T2 = camera_pose((2, 0, 1.5), (0, 0, 0.8))
    assert relation_score("right_of", cup_a, plate, viewpoint=T2) > 0.7
    assert relation_score("left_of", cup_a, plate, viewpoint=T2) < 0.01


def test_front_behind_and_default_view():
    desk = cube(1, (0, 0, 0.4), (1.0, 0.5, 0.8))
    chair_front = cube(2, (0, -0.6, 0.4), 0.4)  # -y side: towards the default observer
    chair_back = cube(3, (0, 0.6, 0.4), 0.4)
    assert relation_score("in_front_of", chair_front, desk) > 0.7
    assert relation_score("behind", chair_back, desk) > 0.7
    assert relation_score("behind", chair_front, desk) < 0.01
    # default observer looks along +y: +x is right
    right = cube(4, (1.0, 0, 0.4), 0.3)
    assert relation_score("right_of", right, desk) > 0.7
    assert relation_score("left_of", right, desk) < 0.01
    v = make_view(None, np.array([0.0, 0.0, 1.0]), np.zeros((1, 3)))
    assert np.allclose(v.forward, [0, 1, 0]) and np.allclose(v.right, [1, 0, 0])


def test_camera_looking_straight_down_has_a_forward():
    T = np.eye(4)
    T[:3, :3] = np.diag([1.0, -1.0, -1.0])  # optical z points down
    v = make_view(T, np.array([0.0, 0.0, 1.0]))
    assert np.isclose(np.linalg.norm(v.forward), 1.0) and abs(v.forward[2]) < 1e-9


# ------------------------------------------------------------------------- between


def test_between():
    sofa = cube(1, (-1.5, 0, 0.4), (0.8, 1.8, 0.8))
    tv = cube(2, (1.5, 0, 0.6), (0.2, 1.2, 0.7))
    table_mid = cube(3, (0.0, 0.1, 0.3), (0.8, 0.5, 0.4))
    lamp_side = cube(4, (0.0, 2.5, 0.8), 0.3)
    lamp_beyond = cube(5, (3.0, 0.0, 0.8), 0.3)
    assert between_score(table_mid, sofa, tv) > 0.8
    assert between_score(lamp_side, sofa, tv) < 0.05
    assert between_score(lamp_beyond, sofa, tv) < 0.01


# ------------------------------------------------------------------------- superlatives


def test_superlatives_rank_eligible_objects():
    objs = [
        on_floor(1, 0, 0, (0.5, 0.5, 0.5)),
        on_floor(2, 2, 0, (1.0, 1.0, 0.3)),
        on_floor(3, 4, 0, (0.2, 0.2, 1.8)),
        on_floor(4, 6, 0, (0.1, 0.1, 0.1)),
    ]
    g = Geometry(objs)
    g.refine(np.arange(4))
    idx = np.arange(4)
    ones = np.ones(4)
    assert np.argmax(superlative_scores("largest", g, idx, ones)) == 1
    assert np.argmax(superlative_scores("smallest", g, idx, ones)) == 3
    assert np.argmax(superlative_scores("tallest", g, idx, ones)) == 2
    assert np.argmax(superlative_scores("shortest", g, idx, ones)) == 3
    assert np.argmax(superlative_scores("highest", g, idx, ones)) == 2
    T = camera_pose((7, -1, 1.5), (6, 0, 0))
    view = make_view(T, g.up)
    assert np.argmax(superlative_scores("closest", g, idx, ones, view)) == 3
    assert np.argmax(superlative_scores("farthest", g, idx, ones, view)) == 0
    # only well-matching objects are ranked: object 1 is the largest of the eligible ones
    base = np.array([1.0, 0.2, 0.9, 0.9])
    s = superlative_scores("largest", g, idx, base)
    assert np.argmax(base * s) == 0
    assert np.all((s >= 0.1) & (s <= 1.0))


def test_geometry_handles_empty_and_degenerate_objects():
    empty = ObjectInfo(1, np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), OrientedBox.from_points(np.zeros((0, 3))), 1, 0, 0)
    single = make_object(2, ((0, 0, 0), (0.001, 0.001, 0.001)))
    g = Geometry([empty, single, cube(3, (1, 0, 0.5), 0.2)])
    g.refine([0, 1, 2])
    s = pair_scores("near", g, [0, 1, 2], [0, 1, 2], RelationParams())
    assert s.shape == (3, 3) and np.all(np.isfinite(s))
    for rel in ("on", "under", "in", "above", "left_of", "behind"):
        assert np.all(np.isfinite(pair_scores(rel, g, [0, 1, 2], [2, 1], RelationParams())))


def test_vertical_up_axis_other_than_z():
    # y-up world: the same scene with (x, y, z) -> (x, z, -y)
    t = table()
    mug = mug_at(2, 0.2, 0.1, 0.75)
    M = np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], float)

    def conv(o):
        pts = (o.points @ M.T).astype(np.float32)
        return ObjectInfo(o.id, pts, o.colors, OrientedBox.from_points(pts), 1, 0, 0)

    assert relation_score("on", conv(mug), conv(t), up=(0, 1, 0)) > 0.8
    assert relation_score("under", conv(mug), conv(t), up=(0, 1, 0)) < 0.05


# ------------------------------------------------------------------------- colours


PURE = {
    "red": (1, 0, 0), "green": (0, 1, 0), "blue": (0, 0, 1), "yellow": (1, 1, 0),
    "orange": (1, 0.5, 0), "purple": (0.5, 0, 0.5), "pink": (1, 0.75, 0.8), "brown": (0.55, 0.27, 0.07),
    "black": (0, 0, 0), "white": (1, 1, 1), "gray": (0.5, 0.5, 0.5), "cyan": (0, 1, 1),
}


@pytest.mark.parametrize("name", sorted(PURE))
def test_pure_colours_match_their_word_best(name):
    rgb = np.array([PURE[name]], float)
    assert color_scores(name, rgb)[0] > 0.8
    assert best_color(rgb) == [name]
    others = [c for c in COLOR_NAMES if c != name and not (name == "white" and c == "beige")]
    assert max(color_scores(c, rgb)[0] for c in others) < 0.5


def test_colour_synonyms_and_ranges():
    rgb = np.array([[0.5, 0.5, 0.5], [0.2, 0.2, 0.2], [0.9, 0.1, 0.1]])
    assert np.allclose(color_scores("grey", rgb), color_scores("gray", rgb))
    s = colors_score(["red"], rgb)
    assert s.shape == (3,) and np.all((s >= 0) & (s <= 1))
    assert s[2] > 0.8 and s[0] < 0.05
    assert np.all(colors_score([], rgb) == 1.0)
    with pytest.raises(KeyError):
        color_scores("plaid", rgb)
    # out-of-range and odd inputs stay in [0, 1]
    weird = np.array([[2.0, -1.0, 0.5], [np.nan, 0, 0]])
    out = color_scores("red", np.nan_to_num(weird))
    assert np.all((out >= 0) & (out <= 1))


def test_gap_distance_matches_axis_aligned_boxes():
    from core3d_ros.core.retrieval.relations import gap_distance

    a = cube(1, (0, 0, 0.5), 0.4)
    b = cube(2, (1.0, 0, 0.5), 0.4)  # 0.6 m apart in x (box surfaces)
    c = cube(3, (1.0, 1.0, 1.5), 0.4)  # diagonal: sqrt(0.6^2 + 0.6^2 + 0.6^2)
    d = cube(4, (0.1, 0.1, 0.5), 0.2)  # inside a
    g = Geometry([a, b, c, d])
    g.refine(np.arange(4))
    dist = gap_distance(g, np.arange(4), np.arange(4))
    step = 0.02  # the grid points sit half a step inside each face
    assert dist[0, 1] == pytest.approx(0.6 + step, abs=1e-6)
    assert dist[0, 2] == pytest.approx(np.sqrt(3) * (0.6 + step), abs=1e-6)
    assert dist[0, 3] == 0.0 and dist[3, 0] == 0.0
    assert np.allclose(dist, dist.T)
    # rotated boxes: symmetric and never larger than the distance between the point sets
    e = make_object(5, ((0.9, -0.2, 0.3), (1.3, 0.2, 0.7)), yaw=0.6)
    g2 = Geometry([a, e])
    g2.refine([0, 1])
    dd = gap_distance(g2, [0, 1], [0, 1])
    from scipy.spatial.distance import cdist

    true = cdist(a.points, e.points).min()
    assert dd[0, 1] == pytest.approx(dd[1, 0])
    assert dd[0, 1] <= true + 1e-6
