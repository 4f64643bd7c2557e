"""The evaluation-only oracle encoder: class-coded frames, one-hot crops and nouns."""
from __future__ import annotations

import numpy as np
import pytest

from core3d_ros.core.camera import CameraIntrinsics
from core3d_ros.core.embed import available_encoders, embed_masks
from core3d_ros.config import EmbedConfig
from core3d_ros.core.frame import Frame
from core3d_ros.tools.oracle_encoder import OracleEncoder, class_coded

CLASSES = ["chair", "table", "trash bin", "bin"]


def frame() -> Frame:
    """8x8: a chair (instance 5) in the top-left 4x4, a trash bin (instance 9) in the bottom
    right 4x4, instance 7 of a class the encoder does not know at (0, 7), background elsewhere."""
    ids = np.zeros((8, 8), np.int32)
    ids[:4, :4] = 5
    ids[4:, 4:] = 9
    ids[0, 7] = 7
    return Frame(
        rgb=np.full((8, 8, 3), 77, np.uint8), depth=np.ones((8, 8), np.float32),
        intrinsics=CameraIntrinsics(8, 8, 8.0, 8.0, 3.5, 3.5), pose=np.eye(4),
        instance_ids=ids, instance_classes={5: "chair", 9: "trash bin", 7: "piano"},
    )


def test_class_coded_frames_carry_the_true_class_per_pixel():
    f = class_coded(frame(), CLASSES)
    assert tuple(f.rgb[0, 0]) == (0, 1, 255)  # chair: index 0 -> code 1
    assert tuple(f.rgb[7, 7]) == (0, 3, 255)  # trash bin: index 2 -> code 3
    assert tuple(f.rgb[0, 7]) == (0, 0, 0) and tuple(f.rgb[5, 0]) == (0, 0, 0)  # unknown class, background
    assert np.array_equal(f.depth, frame().depth) and np.array_equal(f.instance_ids, frame().instance_ids)
    with pytest.raises(ValueError, match="instance ids"):
        class_coded(Frame(rgb=f.rgb, depth=f.depth, intrinsics=f.intrinsics, pose=f.pose), CLASSES)


def test_crops_embed_as_the_one_hot_of_the_majority_class_under_them():
    enc = OracleEncoder(CLASSES)
    assert enc.semantic and enc.dim == 5
    f = class_coded(frame(), CLASSES)
    e = enc.encode_images([f.rgb[:4, :4], f.rgb[:, :5], f.rgb[4:, :4], f.rgb[2:, 2:]])
    assert e.argmax(axis=1).tolist() == [0, 0, 4, 2]  # chair; chair (16 px vs 4); nothing: unknown; bin 16 vs chair 4
    np.testing.assert_array_equal(e, np.eye(5, dtype=np.float32)[[0, 0, 4, 2]])


def test_nouns_embed_as_the_one_hot_of_their_class():
    enc = OracleEncoder(CLASSES)
    e = enc.encode_text(["a photo of a chair", "a photo of a trash bin", "two chairs", "a photo of a bin", "a piano", "a photo of a tablet"])
    assert e.argmax(axis=1).tolist() == [0, 2, 0, 3, 4, 4]
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0)


def test_fused_mask_embeddings_pick_the_objects_class_and_it_is_not_a_mapping_encoder():
    f = class_coded(frame(), CLASSES)
    masks = [f.instance_ids == 5, f.instance_ids == 9]
    e = embed_masks(OracleEncoder(CLASSES), f.rgb, masks, EmbedConfig())
    assert e.argmax(axis=1).tolist() == [0, 2]
    assert "oracle" not in available_encoders()  # evaluation only: no embed.name reaches it
    with pytest.raises(ValueError, match="distinct"):
        OracleEncoder(["chair", "chair"])
