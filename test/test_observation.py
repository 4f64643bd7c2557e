"""Observations (one label image + one record per mask), the frame buffer and Perception."""
from __future__ import annotations

import numpy as np
import pytest

from core3d_ros.config import MapperConfig
from core3d_ros.core.camera import CameraIntrinsics
from core3d_ros.core.mapping.framebuffer import FrameBuffer
from core3d_ros.core.frame import Frame
from core3d_ros.core.observation import (
    Observation,
    ObservationError,
    decode_labels,
    decode_view,
    encode_labels,
)
from core3d_ros.core.perception import Perception
from core3d_ros.config import with_overrides
from core3d_ros.core.segment.base import Mask2D


def _box(shape, y0, y1, x0, x1):
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


def _frame(stamp=1.0, index=0, h=48, w=64, pose=None):
    rng = np.random.default_rng(index)
    return Frame(
        rgb=rng.integers(0, 255, (h, w, 3), dtype=np.uint8),
        depth=np.full((h, w), 2.0, np.float32),
        intrinsics=CameraIntrinsics(fx=50.0, fy=50.0, cx=w / 2, cy=h / 2, width=w, height=h),
        pose=np.eye(4) if pose is None else pose,
        stamp=stamp,
        index=index,
    )


def test_label_image_keeps_small_masks_on_top_of_large_ones():
    shape = (40, 50)
    table = Mask2D(_box(shape, 10, 40, 0, 50), score=0.9, level=0)
    cup = Mask2D(_box(shape, 20, 26, 10, 16), score=0.8, level=2)
    obs = Observation.from_masks(3.5, 7, np.eye(4), [cup, table], embeddings=np.eye(2, 4))
    # the cup is painted last (smaller): its 36 pixels stay, the table keeps the rest
    assert np.count_nonzero(obs.labels == 1) == 36
    assert np.count_nonzero(obs.labels == 2) == 30 * 50 - 36
    assert [r.label for r in obs.masks] == [1, 2]
    assert obs.masks[0].box == (10, 20, 16, 26) and obs.masks[1].box == (0, 10, 50, 40)
    assert obs.masks[0].level == 2 and obs.masks[0].embedding.dtype == np.float16
    obs.validate(frame_shape=shape, dim=4)


def test_a_mask_covered_entirely_by_smaller_ones_is_left_out():
    shape = (10, 10)
    big = Mask2D(_box(shape, 0, 4, 0, 4))  # 16 px
    a = Mask2D(_box(shape, 0, 2, 0, 4))  # 8 px each, together cover `big`
    b = Mask2D(_box(shape, 2, 4, 0, 4))
    obs = Observation.from_masks(0.0, 0, np.eye(4), [big, a, b])
    assert [r.label for r in obs.masks] == [2, 3]
    obs.validate()


def test_labels_round_trip_losslessly_and_compactly():
    rng = np.random.default_rng(0)
    labels = np.zeros((480, 640), np.uint16)
    for i in range(1, 60):  # 59 rectangles, like a keyframe's masks
        y, x = rng.integers(0, 440), rng.integers(0, 600)
        labels[y : y + rng.integers(5, 40), x : x + rng.integers(5, 40)] = i
    labels[0, 0] = 65535
    blob = encode_labels(labels)
    assert np.array_equal(decode_labels(blob, (480, 640)), labels)
    assert len(blob) < 60_000  # a dense bool image per mask would be 59 x 307 kB


@pytest.mark.parametrize(
    "blob, reason",
    [
        (b"", "bad_labels"),
        (b"not a png at all", "bad_labels"),
        (lambda: encode_labels(np.zeros((4, 5), np.uint16)), "size_mismatch"),
        (lambda: __import__("cv2").imencode(".png", np.zeros((6, 8), np.uint8))[1].tobytes(), "bad_labels"),
        (lambda: encode_labels(np.zeros((6, 8), np.uint16))[:30], "bad_labels"),
    ],
)
def test_malformed_label_images_are_refused_by_reason(blob, reason):
    data = blob() if callable(blob) else blob
    with pytest.raises(ObservationError) as info:
        decode_labels(data, (6, 8))
    assert info.value.reason == reason


def _valid_obs(shape=(6, 8)):
    return Observation.from_masks(1.0, 0, np.eye(4), [Mask2D(_box(shape, 0, 3, 0, 4), 0.9)], embeddings=np.ones((1, 3)) / np.sqrt(3))


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda o: setattr(o, "stamp", float("nan")), "bad_stamp"),
        (lambda o: setattr(o, "pose", np.full((4, 4), np.inf)), "bad_pose"),
        (lambda o: setattr(o, "labels", o.labels.astype(np.int32)), "bad_labels"),
        (lambda o: setattr(o, "labels", np.zeros((5, 8), np.uint16)), "size_mismatch"),
        (lambda o: setattr(o, "masks", []), "empty"),
        (lambda o: o.labels.__setitem__((5, 7), 9), "bad_labels"),
        (lambda o: setattr(o.masks[0], "box", (0, 0, 9, 3)), "bad_box"),
        (lambda o: setattr(o.masks[0], "score", float("nan")), "bad_score"),
        (lambda o: setattr(o.masks[0], "embedding", np.array([np.nan, 0, 0], np.float16)), "bad_embedding"),
        (lambda o: setattr(o.masks[0], "embedding", np.zeros(5, np.float16)), "bad_embedding"),
    ],
)
def test_malformed_observations_are_refused_by_reason(damage, reason):
    obs = _valid_obs()
    obs.validate(frame_shape=(6, 8), dim=3)
    damage(obs)
    with pytest.raises(ObservationError) as info:
        obs.validate(frame_shape=(6, 8), dim=3)
    assert info.value.reason == reason


def test_view_crops_travel_as_jpeg():
    shape = (30, 40)
    crop = np.zeros((12, 16, 3), np.uint8)
    crop[:, :8] = (200, 30, 30)
    obs = Observation.from_masks(0.0, 0, np.eye(4), [Mask2D(_box(shape, 0, 12, 0, 16))], view_crops=[crop])
    view = decode_view(obs.masks[0].view_jpeg)
    assert view.shape == (12, 16, 3)
    assert np.abs(view.astype(int) - crop.astype(int)).mean() < 10  # lossy, close
    assert decode_view(b"\xff\xd8 broken") is None and decode_view(b"") is None


# ------------------------------------------------------------------ frame buffer


def test_frame_buffer_keeps_the_newest_and_says_why_a_frame_is_missing():
    buf = FrameBuffer(capacity=3)
    for i in range(5):
        buf.add(_frame(stamp=float(i), index=i))
    assert len(buf) == 3
    frame, why = buf.take(3.0)
    assert frame.index == 3 and why == ""
    assert buf.take(1.0) == (None, "late")  # left the buffer
    assert buf.take(9.0) == (None, "unknown_stamp")  # never seen
    assert buf.take(3.0 + 1e-9)[0] is frame  # float noise on the stamp is tolerated


def test_a_pinned_frame_outlives_the_ring_until_taken():
    buf = FrameBuffer(capacity=2, max_pinned=1)
    buf.add(_frame(stamp=0.0))
    assert buf.pin(0.0)
    for i in range(1, 10):
        buf.add(_frame(stamp=float(i), index=i))
    assert len(buf) == 3  # two recent + the pinned one
    t_pinned = buf.arrived(0.0)  # kept with the pinned frame however many frames came after it
    assert t_pinned is not None and t_pinned <= buf.arrived(9.0)
    frame, why = buf.take(0.0)
    assert frame.stamp == 0.0 and why == ""
    buf.add(_frame(stamp=10.0, index=10))
    assert buf.take(0.0) == (None, "late") and len(buf) == 2
    assert buf.arrived(0.0) is None and buf.arrived(1.0) is None  # gone with their frames


# ------------------------------------------------------------------ perception


def test_perception_observes_keyframes_only_and_embeds_every_mask():
    cfg = with_overrides(
        MapperConfig(), segmenter={"name": "geometric"}, embed={"name": "mean_color"},
        keyframes={"max_interval": 3, "min_translation": 100.0, "min_rotation_deg": 360.0},
    )
    from core3d_ros.core.datasets import make_scene

    scene = make_scene(seed=0, num_frames=8)
    perception = Perception(cfg)
    observed = [perception.observe(scene[i]) for i in range(4)]
    assert [o is not None for o in observed] == [True, False, False, True]  # by interval alone
    obs = observed[0]
    obs.validate(frame_shape=scene[0].shape, dim=perception.encoder.dim)
    assert len(obs.masks) >= 3 and obs.stamp == scene[0].stamp
    for r in obs.masks:
        crop = scene[0].rgb[r.box[1] : r.box[3], r.box[0] : r.box[2]]
        assert crop.size and decode_view(r.view_jpeg).shape == crop.shape
    assert set(perception.timings_ms) == {"segment", "embed", "total"}


def test_a_pin_may_arrive_before_its_frame():
    buf = FrameBuffer(capacity=1, max_pinned=2)
    assert not buf.pin(5.0)  # perception claimed it before mapping buffered it
    for i in range(4, 9):
        buf.add(_frame(stamp=float(i), index=i))
    assert buf.take(5.0)[0].stamp == 5.0
    assert buf.take(4.0) == (None, "late")
