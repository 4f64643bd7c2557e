"""The Mapper end to end on the synthetic room: fusion quality, semantics plumbing, bad frames."""
import numpy as np
import pytest

from core3d_ros.config import MapperConfig
from core3d_ros.core.camera import sampling_stride
from core3d_ros.core.datasets import make_scene
from core3d_ros.core.frame import FrameError
from core3d_ros.core.mapper import Mapper
from core3d_ros.core.segment.base import Mask2D
from core3d_ros.config import with_overrides
from core3d_ros.tools.runs import evaluate_mapper, map_frames


@pytest.fixture(scope="module")
def scene():
    return make_scene(seed=0, num_frames=40)


@pytest.fixture(scope="module")
def oracle_run(scene):
    cfg = with_overrides(MapperConfig(), segmenter={"name": "oracle"}, keyframes={"enabled": False}, embed={"name": "mean_color"})
    mapper = Mapper(cfg)
    summary = map_frames(mapper, scene)
    return mapper, summary


def test_oracle_masks_fuse_into_the_true_instances(scene, oracle_run):
    """Fusion must not lose what perfect masks give it."""
    mapper, summary = oracle_run
    assert summary.processed == len(scene) and not summary.rejected
    metrics = evaluate_mapper(mapper, [scene[i] for i in range(len(scene))])
    # Measured (deterministic map): mean IoU 0.984 over all 13 instances, 0.988 over the 8
    # objects, every instance matched once; the lowest IoU is the floor's (0.89), the lowest
    # object's the sofa's (0.96).
    every, objects = metrics["all_instances"], metrics["objects_only"]
    assert every["mean_iou_gt"] >= 0.95 and objects["mean_iou_gt"] >= 0.95, (every["mean_iou_gt"], objects["mean_iou_gt"])
    for m in (every, objects):
        assert m["recall"] == m["precision"] == 1.0 and m["num_pred"] == m["num_gt"], m
        assert m["over_segmented"] == m["under_segmented"] == 0, m
    assert min(g["iou"] for g in every["per_gt"].values()) >= 0.85, every["per_gt"]
    assert min(g["iou"] for g in objects["per_gt"].values()) >= 0.93, objects["per_gt"]


def test_every_object_is_found_near_its_true_place(scene, oracle_run):
    mapper, _ = oracle_run
    snap = mapper.snapshot()
    for obj in scene.objects:
        # Some object's box centre lies inside the true box (backs against walls and tops above
        # the camera are never seen, so centres may shift a little).
        inside = [o for o in snap.objects if np.all(np.abs(o.box.center - obj.center) <= obj.size / 2)]
        assert inside, f"{obj.class_name} not found"
        best = min(inside, key=lambda o: np.linalg.norm(o.box.center - obj.center))
        assert np.linalg.norm(best.box.center - obj.center) < 0.25


def test_objects_carry_unit_embeddings_and_best_views(oracle_run):
    mapper, _ = oracle_run
    snap = mapper.snapshot()
    assert all(o.embedding is not None for o in snap.objects)
    assert all(abs(np.linalg.norm(o.embedding) - 1) < 1e-4 for o in snap.objects)
    assert all(o.best_view is not None and o.best_view.ndim == 3 for o in snap.objects)
    # The test encoder embeds mean colour as normalise([r, g, b, 1]): the red chair's embedding
    # points to red (its colour part is mostly red).
    chair = max(snap.objects, key=lambda o: o.mean_color[0] - max(o.mean_color[1], o.mean_color[2]))
    assert chair.mean_color[0] > 0.5 and max(chair.mean_color[1], chair.mean_color[2]) < 0.2, chair.mean_color
    rgb = chair.embedding[:3]
    assert np.argmax(rgb) == 0 and rgb[0] > 1.5 * max(rgb[1], rgb[2]), chair.embedding
    assert mapper.encoder.semantic is False  # never presented as semantic
    assert all(o.label == "" for o in snap.objects)


class _KnownEmbeddings:
    """Test encoder: every crop of the n-th frame embeds as ``vectors[n]`` (one batched call per
    frame), so the fused embedding of each mask of that frame is ``vectors[n]`` exactly."""

    name, semantic = "known", False

    def __init__(self, vectors):
        self.vectors, self.calls = vectors, 0
        self.dim = vectors.shape[1]

    def encode_images(self, crops):
        v = self.vectors[self.calls]
        self.calls += 1
        return np.tile(v, (len(crops), 1)).astype(np.float32)

    def encode_text(self, texts):
        return np.zeros((len(texts), self.dim), np.float32)


class _GivenMasks:
    name = "given"

    def __init__(self, masks):
        self.masks = masks

    def segment(self, frame):
        return [Mask2D(self.masks[frame.index], 1.0)]


N_BOARD, N_PATCH = 10 * 11, 8 * 8  # voxels of the board and of the patch (see _board_run)


def _board_run(co_mask_votes: int):
    """A still camera sees a flat board and, 7 voxels beside it, a patch of the same wall, in
    seven frames; each frame's mask embeds a different known unit vector e_k (e_0..e_6).
    Frames 0-3: the mask is the board (one 3-D segment, weight 1). Frames 4-5: the patch alone.
    Frame 6: one mask holds both, so DBSCAN cuts it in two and each part carries e_6 weighted by
    its share of the mask's voxels. Returns the snapshot and the e_k."""
    from core3d_ros.core.camera import CameraIntrinsics
    from core3d_ros.core.frame import Frame

    # A plane facing the camera mid-voxel (z / vs = 40.5), two pixels per voxel along each image
    # axis (z / (f vs) = 0.5), voxel j holding columns 33 + 2j, 34 + 2j and rows 25 + 2j, 26 + 2j:
    # masks cut along voxel edges, so each voxel lies wholly inside or outside a mask.
    vs, z = 0.025, 1.0125
    W, H, f, cx, cy = 64, 48, 81.0, 32.25, 24.25
    intr = CameraIntrinsics(W, H, f, f, cx, cy)
    board = np.zeros((H, W), bool)
    board[11:31, 9:31] = True  # 10 x 11 voxels
    patch = np.zeros((H, W), bool)
    patch[13:29, 45:61] = True  # 8 x 8 voxels, 7 right of the board (256 pixels: above the 200 of min_mask_pixels)
    masks = [board] * 4 + [patch] * 2 + [board | patch]
    rng = np.random.default_rng(7)
    E = rng.standard_normal((len(masks), 8))
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    cfg = with_overrides(
        MapperConfig(),
        fusion={"voxel_size": vs, "pixel_stride": 1, "merge_interval": 0, "co_mask_votes": co_mask_votes, "min_object_observations": 1},
        keyframes={"enabled": False},
        geometry={"enabled": False},
    )
    mapper = Mapper(cfg, segmenter=_GivenMasks(masks), encoder=_KnownEmbeddings(E))
    rgb = np.full((H, W, 3), 120, np.uint8)
    depth = np.full((H, W), z, np.float32)
    for k in range(len(masks)):
        assert mapper.process(Frame(rgb, depth, intr, np.eye(4), stamp=float(k), index=k)).masks == 1
    assert mapper.encoder.calls == len(masks)  # frame k's mask embedded as e_k
    return mapper.snapshot(), E


def _unit(v):
    return v / np.linalg.norm(v)


def test_an_objects_embedding_is_the_weighted_mean_of_its_observations():
    """Kept apart, the board's embedding is normalise(e_0 + e_1 + e_2 + e_3 + w e_6) and the
    patch's normalise(e_4 + e_5 + (1 - w) e_6), w = board voxels / mask voxels in frame 6."""
    snap, E = _board_run(co_mask_votes=0)  # the two parts stay two objects
    w = N_BOARD / (N_BOARD + N_PATCH)
    assert len(snap.objects) == 2, [(o.id, o.num_voxels) for o in snap.objects]
    b, p = sorted(snap.objects, key=lambda o: -o.num_voxels)
    assert (b.num_voxels, b.num_observations, p.num_voxels, p.num_observations) == (N_BOARD, 5, N_PATCH, 3)
    np.testing.assert_allclose(b.embedding, _unit(E[0] + E[1] + E[2] + E[3] + w * E[6]), atol=1e-5)
    np.testing.assert_allclose(p.embedding, _unit(E[4] + E[5] + (1 - w) * E[6]), atol=1e-5)
    # the weight matters: the unweighted mean (w = 1) and the last observation alone are far off
    assert np.linalg.norm(b.embedding - _unit(E[[0, 1, 2, 3, 6]].sum(axis=0))) > 0.05
    assert np.linalg.norm(b.embedding - E[6]) > 0.5


def test_merged_objects_pool_their_weighted_embeddings():
    """With co-mask merging on, the patch (two observations of its own) joins the board when
    frame 6 shows both in one mask; the merged object keeps both weighted sums, and frame 6 adds
    w e_6 + (1 - w) e_6 = e_6: its embedding is normalise(e_0 + ... + e_6)."""
    snap, E = _board_run(co_mask_votes=1)
    assert [(o.num_voxels, o.num_observations) for o in snap.objects] == [(N_BOARD + N_PATCH, 4 + 2 + 1)]
    np.testing.assert_allclose(snap.objects[0].embedding, _unit(E.sum(axis=0)), atol=1e-5)


def test_save_load_round_trip_keeps_objects(tmp_path, oracle_run):
    mapper, _ = oracle_run
    path = mapper.save(str(tmp_path / "m.npz"))
    other = Mapper(mapper.cfg)
    other.load(path)
    a, b = mapper.snapshot(), other.snapshot()
    assert [o.id for o in a.objects] == [o.id for o in b.objects]
    assert all(np.allclose(x.embedding, y.embedding) for x, y in zip(a.objects, b.objects))


def test_damaged_map_leaves_current_map_untouched(tmp_path, oracle_run):
    mapper, _ = oracle_run
    before = len(mapper.snapshot().objects)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError):
        mapper.load(str(bad))
    assert len(mapper.snapshot().objects) == before


@pytest.mark.parametrize(
    "damage,reason",
    [
        (lambda f: setattr(f, "depth", np.zeros_like(f.depth)), "no_valid_depth"),
        (lambda f: setattr(f, "pose", np.full((4, 4), np.nan)), "bad_pose"),
        (lambda f: setattr(f, "rgb", f.rgb[:-2]), "size_mismatch"),
        (lambda f: setattr(f, "rgb", f.rgb.astype(np.float32)), "bad_color"),
        (lambda f: setattr(f, "depth", np.where(f.depth > 0, np.nan, 0).astype(np.float32)), "bad_depth"),
    ],
)
def test_bad_frames_are_rejected_with_a_reason_and_do_not_touch_the_map(scene, damage, reason):
    mapper = Mapper(with_overrides(MapperConfig(), segmenter={"name": "oracle"}))
    mapper.process(scene[0])
    version = mapper.map.version
    frame = scene[1]
    damage(frame)
    with pytest.raises(FrameError) as e:
        mapper.process(frame)
    assert e.value.reason == reason
    assert mapper.map.version == version


def test_keyframes_gate_segmentation(scene):
    seg_calls = []

    class Counting:
        name = "counting"

        def segment(self, frame):
            seg_calls.append(frame.index)
            return []

    cfg = with_overrides(MapperConfig(), keyframes={"enabled": True, "min_translation": 100.0, "min_rotation_deg": 360.0, "max_interval": 5})
    mapper = Mapper(cfg, segmenter=Counting())
    stats = [mapper.process(scene[i]) for i in range(11)]
    assert seg_calls == [0, 5, 10]
    assert [s.keyframe for s in stats].count(True) == 3
    assert np.allclose(mapper.last_pose, scene[10].pose)  # non-keyframes still update the viewpoint


def test_sampling_stride_keeps_one_sample_per_voxel(scene):
    f = scene[0]
    s = sampling_stride(f.depth, f.intrinsics, 0.025)
    far = np.percentile(f.depth[f.depth > 0], 95)
    assert s >= 1 and s * far / f.intrinsics.fx <= 0.025 + 1e-9


def test_snapshot_without_waiting_returns_the_last_one_while_fusion_runs():
    """Queries and publishing take snapshot(wait=False): while fusion holds the map, they get the
    last snapshot at once instead of waiting for mapping."""
    import threading

    from core3d_ros.core.datasets import make_scene

    scene = make_scene(seed=0, num_frames=4)
    cfg = with_overrides(MapperConfig(), segmenter={"name": "oracle"}, keyframes={"enabled": False})
    mapper = Mapper(cfg)
    mapper.process(scene[0])
    mapper.process(scene[1])
    first = mapper.snapshot()
    mapper.process(scene[2])  # the map changed since `first`
    with mapper._lock:  # fusion in progress (another thread would wait here)
        got: list = []
        t = threading.Thread(target=lambda: got.append(mapper.snapshot(wait=False)))
        t.start()
        t.join(2.0)
        assert got and got[0] is first  # at once, and one change old
    fresh = mapper.snapshot(wait=False)  # the map is free again: rebuilt
    assert fresh is not first and fresh.frames == 3
