"""Segmenters: the ground-truth oracle and the weight-free geometric generator."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core3d_ros.config import GeometricSegmenterConfig, SegmenterConfig
from core3d_ros.core.camera import CameraIntrinsics
from core3d_ros.core.frame import Frame
from core3d_ros.core.segment.base import Mask2D, available_segmenters, make_segmenter
from core3d_ros.core.segment.geometric import GeometricSegmenter
from core3d_ros.core.segment.oracle import OracleSegmenter

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "7scenes-redkitchen"


def _frame(depth: np.ndarray, intr: CameraIntrinsics, instance_ids: np.ndarray | None = None) -> Frame:
    h, w = depth.shape
    return Frame(
        rgb=np.zeros((h, w, 3), np.uint8),
        depth=depth.astype(np.float32),
        intrinsics=intr,
        pose=np.eye(4),
        instance_ids=instance_ids,
    )


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 0.0


# --------------------------------------------------------------------------- synthetic scene
INTR = CameraIntrinsics(640, 480, 525.0, 525.0, 319.5, 239.5)
# Axis-aligned boxes standing on the floor (world z up, metres): (min corner, max corner).
BOX_A = ((-0.80, 1.80, 0.0), (-0.40, 2.20, 0.50))  # left, near
BOX_B = ((0.30, 2.00, 0.0), (0.80, 2.30, 0.30))  # right, near
BOX_C = ((-0.85, 2.90, 0.0), (-0.30, 3.30, 1.00))  # behind A: touches it in the image, 0.7 m deeper


def _render(boxes, *, pitch_deg=35.0, height=1.5, noise=True, seed=0):
    """Ray-cast a floor plane and boxes into a depth image; returns depth and an id image.

    Ids: 0 nothing (beyond range), 1 floor, 2.. the boxes in the given order.
    """
    th = np.radians(pitch_deg)
    # Camera-to-world rotation: columns are the camera's x (right), y (down), z (forward) axes.
    R = np.array([[1.0, 0.0, 0.0], [0.0, -np.sin(th), -np.cos(th)], [0.0, np.cos(th), -np.sin(th)]]).T
    C = np.array([0.0, 0.0, height])
    v, u = np.mgrid[0 : INTR.height, 0 : INTR.width].astype(np.float64)
    rays = np.stack([(u - INTR.cx) / INTR.fx, (v - INTR.cy) / INTR.fy, np.ones_like(u)], axis=-1) @ R.T
    t_best = np.full(u.shape, np.inf)
    ids = np.zeros(u.shape, np.int32)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_floor = np.where(rays[..., 2] < 0, -C[2] / rays[..., 2], np.inf)
        hit = t_floor < t_best
        t_best[hit], ids[hit] = t_floor[hit], 1
        for i, (lo, hi) in enumerate(boxes):
            t1 = (np.asarray(lo) - C) / rays
            t2 = (np.asarray(hi) - C) / rays
            t_near = np.nanmax(np.minimum(t1, t2), axis=-1)
            t_far = np.nanmin(np.maximum(t1, t2), axis=-1)
            hit = (t_near <= t_far) & (t_near > 0) & (t_near < t_best)
            t_best[hit], ids[hit] = t_near[hit], i + 2
    depth = t_best  # rays have unit camera-z component, so t is the depth
    far = ~np.isfinite(depth) | (depth > 5.0)
    depth[far], ids[far] = 0.0, 0
    if noise:  # Kinect-like: noise growing with z^2, millimetre quantisation, a few dropouts
        rng = np.random.default_rng(seed)
        depth = depth + rng.normal(0.0, 1.0, depth.shape) * 0.0015 * depth**2
        depth = np.round(depth * 1000.0) / 1000.0
        depth[(rng.random(depth.shape) < 0.01) | far] = 0.0
    return depth.astype(np.float32), ids


@pytest.fixture(scope="module")
def scene():
    depth, ids = _render([BOX_A, BOX_B, BOX_C])
    masks = GeometricSegmenter().segment(_frame(depth, INTR))
    return depth, ids, masks


def _best(masks: list[Mask2D], truth: np.ndarray) -> tuple[float, int]:
    ious = [_iou(m.mask, truth) for m in masks]
    i = int(np.argmax(ious))
    return ious[i], i


def test_synthetic_scene_sanity():
    # The constructed scene itself: all three boxes visible, A and C adjacent in the image.
    _, ids = _render([BOX_A, BOX_B, BOX_C], noise=False)
    for k in (1, 2, 3, 4):
        assert np.count_nonzero(ids == k) > 2000
    a_below = np.roll(ids == 2, -1, axis=0)  # pixels directly above an A pixel
    assert np.count_nonzero(a_below & (ids == 4)) > 20


def test_geometric_output_types(scene):
    depth, _, masks = scene
    assert masks, "no masks on the synthetic scene"
    for m in masks:
        assert isinstance(m, Mask2D)
        assert m.mask.shape == depth.shape and m.mask.dtype == bool
        assert m.area >= GeometricSegmenterConfig().min_mask_pixels
        assert np.isfinite(m.score) and 0.0 <= m.score <= 1.0
        assert m.level in (0, 1) and m.source_id == -1
    assert any(m.level == 0 for m in masks)


def test_geometric_floor_is_one_mask(scene):
    _, ids, masks = scene
    iou, i = _best(masks, ids == 1)
    assert iou > 0.9, f"floor IoU {iou:.3f}"
    assert masks[i].level == 0
    # No other mask claims a real share of the floor.
    floor = ids == 1
    for j, m in enumerate(masks):
        if j != i:
            assert np.count_nonzero(m.mask & floor) < 0.05 * np.count_nonzero(floor)


@pytest.mark.parametrize("box_id", [2, 3, 4], ids=["A", "B", "C"])
def test_geometric_each_box_is_its_own_mask(scene, box_id):
    _, ids, masks = scene
    truth = ids == box_id
    iou, i = _best(masks, truth)
    assert iou > 0.8, f"box {box_id} best IoU {iou:.3f}"
    assert masks[i].score > 0.5


def test_geometric_separates_boxes_touching_in_the_image(scene):
    _, ids, masks = scene
    a, c = ids == 2, ids == 4
    ia, ic = _best(masks, a)[1], _best(masks, c)[1]
    assert ia != ic
    # No mask, at any level, spans both boxes.
    for m in masks:
        share_a = np.count_nonzero(m.mask & a) / np.count_nonzero(a)
        share_c = np.count_nonzero(m.mask & c) / np.count_nonzero(c)
        assert min(share_a, share_c) < 0.05


# A table (top 1.6 x 1.0 m at 0.75 m, a dominant plane in the image; four 5 cm legs) with a box
# standing on it.
TABLE_TOP = ((-0.8, 1.5, 0.71), (0.8, 2.5, 0.75))
TABLE_LEGS = [((x, y, 0.0), (x + 0.05, y + 0.05, 0.71)) for x in (-0.75, 0.70) for y in (1.55, 2.40)]
BOX_ON_TABLE = ((0.10, 1.9, 0.75), (0.30, 2.1, 0.95))


@pytest.mark.parametrize("noise", [False, True], ids=["clean", "kinect"])
def test_geometric_keeps_a_table_whole_and_what_stands_on_it_apart(noise):
    # The table top is a dominant plane; its front face and legs meet it over convex edges and
    # belong to it, while the box on it (a concave crease) and the floor (concave at the legs'
    # feet) stay apart.
    depth, ids = _render([TABLE_TOP, *TABLE_LEGS, BOX_ON_TABLE], noise=noise)
    table = (ids >= 2) & (ids <= 6)
    box = ids == 7
    masks = GeometricSegmenter().segment(_frame(depth, INTR))
    iou, i = _best(masks, table)
    assert iou > 0.85, f"table IoU {iou:.3f}"
    legs = table & (ids != 2)
    assert np.count_nonzero(masks[i].mask & legs) > 0.5 * np.count_nonzero(legs)
    assert np.count_nonzero(masks[i].mask & box) < 0.05 * np.count_nonzero(box)
    assert _best(masks, box)[0] > 0.8
    assert _best(masks, ids == 1)[0] > 0.9  # the floor


def test_geometric_without_noise_and_deterministic():
    depth, ids = _render([BOX_A, BOX_B, BOX_C], noise=False)
    seg = GeometricSegmenter()
    first = seg.segment(_frame(depth, INTR))
    second = seg.segment(_frame(depth, INTR))
    assert len(first) == len(second)
    assert all(np.array_equal(p.mask, q.mask) and p.score == q.score for p, q in zip(first, second))
    for k in (1, 2, 3, 4):
        assert _best(first, ids == k)[0] > 0.8


def test_geometric_invalid_depth_gives_no_masks():
    seg = GeometricSegmenter()
    assert seg.segment(_frame(np.zeros((480, 640), np.float32), INTR)) == []
    nan = np.full((480, 640), np.nan, np.float32)
    assert seg.segment(_frame(nan, INTR)) == []
    sparse = np.zeros((480, 640), np.float32)
    sparse[::50, ::50] = 2.0  # a few isolated readings: nothing large enough for a mask
    assert seg.segment(_frame(sparse, INTR)) == []


def test_geometric_tolerates_nan_and_odd_sizes():
    depth, ids = _render([BOX_A, BOX_B], noise=False)
    depth = depth[:479, :637].copy()  # not a multiple of the stride
    depth[100:110, 200:260] = np.nan
    intr = CameraIntrinsics(637, 479, INTR.fx, INTR.fy, INTR.cx, INTR.cy)
    masks = GeometricSegmenter().segment(_frame(depth, intr))
    assert masks
    for m in masks:
        assert m.mask.shape == (479, 637) and np.isfinite(m.score)
    assert _best(masks, ids[:479, :637] == 2)[0] > 0.8


def test_geometric_levels_and_planes_switch():
    depth, ids = _render([BOX_A, BOX_B, BOX_C])
    one_level = GeometricSegmenterConfig(cluster_eps=[0.05], concave_deg=[60.0])
    masks = GeometricSegmenter(one_level).segment(_frame(depth, INTR))
    assert {m.level for m in masks} == {0}
    no_planes = GeometricSegmenterConfig(keep_planes=False)
    masks = GeometricSegmenter(no_planes).segment(_frame(depth, INTR))
    assert _best(masks, ids == 1)[0] < 0.5  # the floor is removed but not reported
    assert _best(masks, ids == 2)[0] > 0.8


def test_geometric_config_validation():
    with pytest.raises(ValueError, match="concave_deg"):
        GeometricSegmenter(GeometricSegmenterConfig(cluster_eps=[0.05, 0.02], concave_deg=[60.0]))
    with pytest.raises(ValueError, match="pixel_stride"):
        GeometricSegmenter(GeometricSegmenterConfig(pixel_stride=-1))


def test_registry_builds_both():
    assert {"geometric", "oracle"} <= set(available_segmenters())
    assert isinstance(make_segmenter(SegmenterConfig(name="geometric")), GeometricSegmenter)
    assert isinstance(make_segmenter(SegmenterConfig(name="oracle")), OracleSegmenter)


# --------------------------------------------------------------------------- oracle
def test_oracle_returns_exactly_the_ground_truth_instances():
    ids = np.zeros((120, 160), np.int32)
    ids[10:50, 10:60] = 7
    ids[60:110, 20:40] = 3
    ids[60:100, 80:150] = 12
    ids[0:5, 150:155] = 9  # 25 pixels: below the minimum
    seg = make_segmenter(SegmenterConfig(name="oracle"))
    masks = seg.segment(_frame(np.ones((120, 160), np.float32), CameraIntrinsics(160, 120, 100, 100, 80, 60), ids))
    assert sorted(m.source_id for m in masks) == [3, 7, 12]
    for m in masks:
        assert np.array_equal(m.mask, ids == m.source_id)
        assert m.score == 1.0 and m.level == 0 and m.mask.dtype == bool
    assert [m.area for m in masks] == sorted((m.area for m in masks), reverse=True)


def test_oracle_minimum_size_is_configurable():
    ids = np.zeros((40, 40), np.int32)
    ids[:5, :5] = 1
    masks = OracleSegmenter(min_mask_pixels=10).segment(
        _frame(np.ones((40, 40), np.float32), CameraIntrinsics(40, 40, 40, 40, 20, 20), ids)
    )
    assert [m.source_id for m in masks] == [1]


def test_oracle_without_ground_truth_raises():
    seg = make_segmenter(SegmenterConfig(name="oracle"))
    with pytest.raises(ValueError, match="instance ids"):
        seg.segment(_frame(np.ones((48, 64), np.float32), CameraIntrinsics(64, 48, 50, 50, 32, 24)))


# --------------------------------------------------------------------------- real data
def _seven_scenes_frame(index: int = 0) -> Frame:
    cv2 = pytest.importorskip("cv2")
    if not DATA.is_dir():
        pytest.skip(f"7-Scenes test data not found at {DATA} (only present in the project's shared data folder)")
    raw = cv2.imread(str(DATA / f"frame-{index:06d}.depth.png"), cv2.IMREAD_UNCHANGED)
    bgr = cv2.imread(str(DATA / f"frame-{index:06d}.color.jpg"), cv2.IMREAD_COLOR)
    assert raw is not None and bgr is not None, "unreadable 7-Scenes frame"
    depth = raw.astype(np.float32) / 1000.0
    depth[(raw == 0) | (raw == 65535) | (depth > 5.0)] = 0.0
    intr = CameraIntrinsics(640, 480, 585.0, 585.0, 320.0, 240.0)
    return Frame(rgb=np.ascontiguousarray(bgr[:, :, ::-1]), depth=depth, intrinsics=intr, pose=np.eye(4))


@pytest.mark.parametrize("index", [0, 200])
def test_geometric_on_real_kinect_frame(index):
    frame = _seven_scenes_frame(index)
    masks = GeometricSegmenter().segment(frame)
    assert 3 <= len(masks) <= 200, len(masks)
    covered = np.zeros(frame.shape, bool)
    for m in masks:
        assert m.mask.shape == frame.shape and m.mask.any()
        assert 0.0 <= m.score <= 1.0
        covered |= m.mask
    valid = frame.depth > 0
    coverage = np.count_nonzero(covered & valid) / np.count_nonzero(valid)
    assert coverage >= 0.6, f"only {coverage:.1%} of valid-depth pixels covered"
