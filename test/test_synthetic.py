"""The synthetic room: determinism, geometry, ids, coverage, poses."""
from __future__ import annotations

import time

import numpy as np
import pytest

from core3d_ros.core.camera import backproject, is_valid_pose, project
from core3d_ros.core.datasets import Dataset, SyntheticScene, make_scene

N_FRAMES = 24


@pytest.fixture(scope="module")
def scene() -> SyntheticScene:
    return make_scene(seed=1, num_frames=N_FRAMES)


@pytest.fixture(scope="module")
def frames(scene):
    return [scene[i] for i in range(len(scene))]


def test_protocol_and_contents(scene, frames):
    assert isinstance(scene, Dataset)
    assert len(scene) == N_FRAMES and scene.name == "synthetic-1"
    assert 7 <= len(scene.objects) <= 10
    classes = [o.class_name for o in scene.objects]
    assert len(set(classes)) == len(classes)
    for required in ("table", "chair", "sofa", "cabinet", "mug", "monitor", "lamp"):
        assert required in classes
    colors = {o.class_name: o.color for o in scene.objects}
    assert len(set(colors.values())) == len(colors)
    assert colors["chair"][0] > 150 and max(colors["chair"][1:]) < 80  # red
    assert colors["sofa"][2] > 150 and max(colors["sofa"][:2]) < 100  # blue
    assert colors["cabinet"][1] > 120 and max(colors["cabinet"][0], colors["cabinet"][2]) < 100  # green
    assert [o.class_name for o in scene.structures] == ["floor", "wall", "wall", "wall", "wall"]
    ids = [o.id for o in scene.instances]
    assert len(set(ids)) == len(ids) and 0 not in ids
    f = frames[0]
    f.validate()
    assert f.rgb.shape == (240, 320, 3) and f.depth.shape == (240, 320) and f.instance_ids.dtype == np.int32
    assert f.instance_classes == scene.instance_classes
    assert f.stamp == 0.0 and frames[3].index == 3 and frames[3].stamp == pytest.approx(0.1)


def test_stacked_objects(scene):
    table = scene.objects_of_class("table")[0]
    for name in ("mug", "monitor"):
        obj = scene.objects_of_class(name)[0]
        assert obj.supported_by == table.id
        assert obj.bbox_min[2] == pytest.approx(table.top, abs=1e-9)  # stands on the top
        assert np.all(obj.bbox_min[:2] >= table.bbox_min[:2]) and np.all(obj.bbox_max[:2] <= table.bbox_max[:2])
    assert table.top == pytest.approx(0.75)


def test_determinism():
    a, b = make_scene(seed=5, num_frames=6, noise=0.01), make_scene(seed=5, num_frames=6, noise=0.01)
    c = make_scene(seed=6, num_frames=6)
    for i in (0, 4):
        fa, fb = a[i], b[i]
        np.testing.assert_array_equal(fa.rgb, fb.rgb)
        np.testing.assert_array_equal(fa.depth, fb.depth)
        np.testing.assert_array_equal(fa.instance_ids, fb.instance_ids)
        np.testing.assert_array_equal(fa.pose, fb.pose)
    np.testing.assert_array_equal(a[2].rgb, a[2].rgb)  # random access is repeatable
    assert [o.center.tolist() for o in a.objects] == [o.center.tolist() for o in b.objects]
    assert not np.array_equal(a.poses, c.poses)
    assert [o.center.tolist() for o in a.objects] != [o.center.tolist() for o in c.objects]


def test_depth_matches_geometry(scene, frames):
    table = scene.objects_of_class("table")[0]
    top_hits = 0
    for f in frames:
        pts, flat = backproject(f.depth, f.intrinsics, f.pose)
        labels = f.instance_ids.reshape(-1)[flat]
        # every labelled point lies on (inside the bounding box of) its instance
        for obj in scene.instances:
            p = pts[labels == obj.id]
            if len(p):
                assert np.all(p >= obj.bbox_min - 2e-3) and np.all(p <= obj.bbox_max + 2e-3), obj.class_name
        floor = pts[labels == 1]
        if len(floor):
            assert np.abs(floor[:, 2]).max() < 2e-3
        p = pts[labels == table.id]
        top_hits += int(np.sum(np.abs(p[:, 2] - 0.75) < 2e-3))
    assert top_hits > 1000  # the table top is seen at z = 0.75

    # a pixel looking at the middle of the free table top back-projects to z = table height
    f = frames[0]
    for x in np.linspace(table.bbox_min[0] + 0.1, table.bbox_max[0] - 0.1, 7):
        point = np.array([[x, table.center[1] - 0.3, 0.75]], dtype=np.float32)
        u, v, z = project(point, f.intrinsics, f.pose)
        ui, vi = int(round(u[0])), int(round(v[0]))
        if 0 <= ui < 320 and 0 <= vi < 240 and f.instance_ids[vi, ui] == table.id:
            pts, _ = backproject(f.depth, f.intrinsics, f.pose, mask=_single(vi, ui))
            assert pts[0, 2] == pytest.approx(0.75, abs=0.01)
            assert f.depth[vi, ui] == pytest.approx(z[0], abs=0.02)
            break
    else:
        pytest.fail("no free table-top pixel found")


def _single(v: int, u: int) -> np.ndarray:
    m = np.zeros((240, 320), bool)
    m[v, u] = True
    return m


def test_ids_consistent_with_classes_and_colors(scene, frames):
    for f in frames[::4]:
        ids = np.unique(f.instance_ids)
        assert set(ids.tolist()) - {0} <= set(scene.instance_classes)
        for oid in ids:
            if oid == 0:
                continue
            mask = f.instance_ids == oid
            mean = f.rgb[mask].astype(float).mean(axis=0)
            color = np.array(scene.object(int(oid)).color, float)
            # flat colour with shading in [0.55, 1]: the hue direction is preserved
            ratio = mean / np.maximum(color, 1)
            assert np.all(ratio[color > 60] > 0.45) and np.all(ratio[color > 60] < 1.1), scene.instance_classes[oid]


def test_every_object_visible(scene, frames):
    best = {o.id: 0 for o in scene.instances}
    for f in frames:
        ids, counts = np.unique(f.instance_ids, return_counts=True)
        for i, c in zip(ids.tolist(), counts.tolist()):
            if i:
                best[i] = max(best[i], c)
    for obj in scene.instances:
        assert best[obj.id] >= 50, f"{obj.class_name} {obj.id} barely visible ({best[obj.id]} px)"


def test_poses_valid(scene):
    for T in scene.poses:
        assert is_valid_pose(T)
        eye = T[:3, 3]
        assert 1.2 < eye[2] < 1.6
        assert abs(eye[0]) < scene.room_size[0] / 2 and abs(eye[1]) < scene.room_size[1] / 2
        assert T[2, 2] < 0  # the optical axis looks down a little
        assert T[2, 0] == pytest.approx(0.0, abs=1e-9)  # no roll: image x stays horizontal


def test_depth_noise():
    clean, noisy = make_scene(seed=2, num_frames=2), make_scene(seed=2, num_frames=2, noise=0.02)
    a, b = clean[1], noisy[1]
    both = (a.depth > 0) & (b.depth > 0)
    diff = (b.depth - a.depth)[both]
    assert 0.015 < diff.std() < 0.025
    np.testing.assert_array_equal(a.instance_ids, b.instance_ids)


def test_render_speed():
    t = time.perf_counter()
    s = make_scene(seed=3, num_frames=20)
    for i in range(len(s)):
        s[i]
    assert time.perf_counter() - t < 10.0


def test_pickle_roundtrip():
    import pickle

    s = make_scene(seed=0, num_frames=3, width=64, height=48)
    t = pickle.loads(pickle.dumps(s))
    np.testing.assert_array_equal(s[1].rgb, t[1].rgb)
    np.testing.assert_array_equal(s[1].instance_ids, t[1].instance_ids)
    a, b = s.objects[0], t.objects[0]
    assert a is not b and a != b and a == a  # identity equality (array fields)
