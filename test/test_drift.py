"""``core3d eval --drift`` (tools/drift.py): the drift model by hand, an exact correction of a
drifted frame whose depth is kept, and the command."""
import json

import numpy as np
import pytest

from core3d_ros.config import FusionConfig
from core3d_ros.core.fusion.object_map import ObjectMap
from core3d_ros.tools.drift import drift_transform
from test_corrections import INTR, LEFT, RGB, keys_of, patch, trans


def test_drift_model_by_hand():
    # 2 m travelled, 1 cm/m along +x, 0.5 deg/m about the vertical through (1, 0, 0)
    D = drift_transform(2.0, np.array([1.0, 0.0, 0.0]), np.array([1.0, 0.0, 0.0]), 0.01, 0.5)
    a = np.radians(1.0)
    p = np.array([2.0, 0.0, 0.3, 1.0])  # 1 m from the axis: turned by 1 deg about it, then 2 cm along x
    np.testing.assert_allclose(D @ p, [1 + np.cos(a) + 0.02, np.sin(a), 0.3, 1.0], atol=1e-12)
    np.testing.assert_allclose(drift_transform(0.0, np.zeros(3), np.array([0.0, 1.0, 0.0]), 0.01, 0.5), np.eye(4))


@pytest.mark.parametrize("keep_depth", [True, False])
def test_a_drifted_frame_corrected_lands_where_the_true_pose_puts_it(keep_depth):
    """A frame fused 8 cm off along x (10 cm voxels), then corrected to the true pose: with its
    depth kept, its voxels are exactly those of the frame fused with the true pose; without,
    each voxel centre moves back 8 cm, into the voxel one to the left."""
    c = dict(voxel_size=0.1, merge_interval=0, min_object_observations=1, min_valid_pixels=10, min_segment_voxels=3, free_space=False)
    depth, labels = patch(LEFT, 1)
    truth = ObjectMap(FusionConfig(**c))
    truth.integrate_frame(depth, INTR, np.eye(4), RGB, labels, 1.0)
    drifted = ObjectMap(FusionConfig(correction_depth_mb=256 if keep_depth else 0, **c))
    drifted.integrate_frame(depth, INTR, trans(0.08), RGB, labels, 1.0)
    (t_id,), (d_id,) = truth.objects, drifted.objects
    expected = keys_of(truth, t_id)
    assert not np.array_equal(keys_of(drifted, d_id), expected)
    stats = drifted.apply_corrections([(1.0, np.eye(4))])
    assert stats.reprojected == int(keep_depth)
    got = keys_of(drifted, d_id)
    if keep_depth:
        assert np.array_equal(got, expected)
    else:
        from core3d_ros.core.fusion.voxels import unpack

        assert len(got) <= len(expected) + 4 and np.abs(unpack(got)[:, 0].mean() - unpack(expected)[:, 0].mean()) < 1.0


def test_the_command(tmp_path):
    from core3d_ros.cli import main

    out = tmp_path / "drift.json"
    argv = ["eval", "--drift", "--segmenters", "oracle", "--frames", "6", "--seeds", "0", "--correct-every", "3"]
    assert main([*argv, "--timing-voxel", "0.05", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    r = report["segmenters"]["oracle"]
    iou = r["mean_iou_gt"]
    assert set(iou) == {"drift_free", "drifted", "corrected_end", "corrected_partway"}
    # the corrections give back most of what the drift took
    assert iou["corrected_end"] > iou["drifted"] + 0.1 and iou["corrected_partway"] > iou["drifted"] + 0.1
    runs = r["per_seed"]["0"]
    assert len(runs["corrected_partway"]["corrections"]) == 2 and len(runs["corrected_end"]["corrections"]) == 1
    assert runs["drifted"]["max_position_error_m"] > 0.02 and runs["drift_free"]["max_position_error_m"] == 0.0
    assert report["timing"]["voxel_size"] == 0.05 and report["timing"]["voxels_moved"] > 0
    with pytest.raises(SystemExit):
        main([*argv, "--drift-rate", "-1"])
