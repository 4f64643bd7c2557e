"""Dataset readers: format detection, parsing, association, depth scaling, intrinsics, damage."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from core3d_ros.config import DepthConfig
from core3d_ros.core.camera import backproject, is_valid_pose, project
from core3d_ros.core.datasets import (
    Dataset,
    DatasetError,
    Replica,
    ScanNet,
    SevenScenes,
    TUMRGBD,
    detect_format,
    iter_frames,
    open_dataset,
)
from core3d_ros.core.datasets.base import quaternion_pose
from core3d_ros.core.datasets.tum import associate

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REDKITCHEN = SHARED_DATA / "7scenes-redkitchen"


# --------------------------------------------------------------------------------------------
# helpers that write tiny sequences


def write_rgb(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def write_depth(path: Path, depth_m: np.ndarray, scale: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.round(depth_m * scale).astype(np.uint16))


def color_image(w: int, h: int, k: int) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = 40 * k % 256  # red channel encodes the frame
    img[..., 1] = 200
    img[..., 2] = 10
    return img


def depth_image(w: int, h: int, k: int) -> np.ndarray:
    d = np.full((h, w), 1.0 + 0.25 * k, np.float32)
    d[0, 0] = 0.0  # invalid
    d[1, 1] = 9.0  # beyond max_depth
    return d


def pose_matrix(k: int) -> np.ndarray:
    a = 0.1 * k
    T = np.eye(4)
    T[:3, :3] = [[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]
    T[:3, 3] = [0.5 * k, -0.2, 1.0]
    return T


def rotation_to_quaternion(R: np.ndarray) -> np.ndarray:
    """(x, y, z, w) for a rotation matrix (trace > 0 case suffices for the test poses)."""
    w = np.sqrt(1.0 + np.trace(R)) / 2
    return np.array([(R[2, 1] - R[1, 2]) / (4 * w), (R[0, 2] - R[2, 0]) / (4 * w), (R[1, 0] - R[0, 1]) / (4 * w), w])


def make_sevenscenes(root: Path, n: int = 4, w: int = 32, h: int = 24) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        write_rgb(root / f"frame-{k:06d}.color.png", color_image(w, h, k))
        write_depth(root / f"frame-{k:06d}.depth.png", depth_image(w, h, k), 1000.0)
        np.savetxt(root / f"frame-{k:06d}.pose.txt", pose_matrix(k))
    np.savetxt(root / "camera-intrinsics.txt", [[30.0, 0, 15.5], [0, 31.0, 11.5], [0, 0, 1]])
    return root


def make_tum(root: Path, w: int = 32, h: int = 24) -> Path:
    """Colour at 30 Hz, depth offset by a few ms (one missing), ground truth at 100 Hz."""
    root.mkdir(parents=True, exist_ok=True)
    t0 = 1305031102.175304
    rgb_lines, depth_lines, gt_lines = ["# colour images", "# timestamp filename"], ["# depth"], ["# ground truth"]
    for k in range(5):
        t = t0 + k / 30.0
        name = f"rgb/{t:.6f}.png"
        write_rgb(root / name, color_image(w, h, k))
        rgb_lines.append(f"{t:.6f} {name}")
        if k == 3:
            continue  # no depth for this colour frame: dropped from the sequence
        td = t + 0.004
        dname = f"depth/{td:.6f}.png"
        write_depth(root / dname, depth_image(w, h, k), 5000.0)
        depth_lines.append(f"{td:.6f} {dname}")
    # a stray depth image far from every colour frame
    depth_lines.append(f"{t0 + 10:.6f} depth/stray.png")
    for j in range(25):
        t = t0 - 0.02 + j / 100.0
        T = pose_matrix(j)
        q = rotation_to_quaternion(T[:3, :3])
        gt_lines.append(f"{t:.4f} " + " ".join(f"{v:.8f}" for v in [*T[:3, 3], *q]))
    (root / "rgb.txt").write_text("\n".join(rgb_lines) + "\n")
    (root / "depth.txt").write_text("\n".join(depth_lines) + "\n")
    (root / "groundtruth.txt").write_text("\n".join(gt_lines) + "\n")
    return root


def make_replica(parent: Path, n: int = 3, w: int = 40, h: int = 20, cam_in_parent: bool = True) -> Path:
    root = parent / "room0"
    res = root / "results"
    for k in range(n):
        write_rgb(res / f"frame{k:06d}.jpg", color_image(w, h, k))
        write_depth(res / f"depth{k:06d}.png", depth_image(w, h, k), 6553.5)
    lines = [" ".join(f"{v:.10f}" for v in pose_matrix(k).ravel()) for k in range(n)]
    (root / "traj.txt").write_text("\n".join(lines) + "\n")
    cam = {"camera": {"w": w, "h": h, "fx": 20.0, "fy": 21.0, "cx": 19.5, "cy": 9.5, "scale": 6553.5}}
    (parent if cam_in_parent else root).joinpath("cam_params.json").write_text(json.dumps(cam))
    return root


def make_scannet(root: Path, n: int = 4, dw: int = 32, dh: int = 24, cw: int = 64, ch: int = 48) -> Path:
    for k in range(n):
        write_rgb(root / "color" / f"{k}.jpg", color_image(cw, ch, k))
        write_depth(root / "depth" / f"{k}.png", depth_image(dw, dh, k), 1000.0)
        (root / "pose").mkdir(parents=True, exist_ok=True)
        np.savetxt(root / "pose" / f"{k}.txt", pose_matrix(k))
    (root / "intrinsic").mkdir(parents=True, exist_ok=True)
    kd = np.eye(4)
    kd[:3, :3] = [[28.0, 0, 15.5], [0, 29.0, 11.5], [0, 0, 1]]
    kc = np.eye(4)
    kc[:3, :3] = [[56.0, 0, 31.5], [0, 58.0, 23.5], [0, 0, 1]]
    np.savetxt(root / "intrinsic" / "intrinsic_depth.txt", kd)
    np.savetxt(root / "intrinsic" / "intrinsic_color.txt", kc)
    return root


# --------------------------------------------------------------------------------------------
# 7-Scenes


def test_sevenscenes_fake(tmp_path):
    root = make_sevenscenes(tmp_path / "seq")
    assert detect_format(root) == "7scenes"
    ds = open_dataset(root, depth=DepthConfig(min_depth=0.1, max_depth=5.0))
    assert isinstance(ds, SevenScenes) and isinstance(ds, Dataset)
    assert len(ds) == 4
    assert ds.intrinsics.fx == 30.0 and ds.intrinsics.fy == 31.0 and ds.intrinsics.cx == 15.5
    assert (ds.intrinsics.width, ds.intrinsics.height) == (32, 24)
    f = ds[2]
    f.validate()
    assert f.index == 2 and f.stamp == pytest.approx(2 / 30.0)
    assert f.rgb.dtype == np.uint8 and tuple(f.rgb[5, 5]) == (80, 200, 10)  # RGB order
    assert f.depth.dtype == np.float32 and f.depth[5, 5] == pytest.approx(1.5)
    assert f.depth[0, 0] == 0.0 and f.depth[1, 1] == 0.0  # invalid and beyond max_depth
    np.testing.assert_allclose(f.pose, pose_matrix(2), atol=1e-9)
    assert f.instance_ids is None

    strided = open_dataset(root, stride=2, max_frames=1)
    assert len(strided) == 1
    assert strided[0].stamp == 0.0
    strided = open_dataset(root, stride=3)
    assert len(strided) == 2 and strided[1].index == 1 and strided[1].stamp == pytest.approx(3 / 30.0)
    with pytest.raises(IndexError):
        strided[2]
    assert [fr.index for fr in strided] == [0, 1]  # iteration protocol via IndexError


def test_sevenscenes_damaged_files(tmp_path):
    root = make_sevenscenes(tmp_path / "seq", n=5)
    (root / "frame-000001.color.png").write_bytes(b"not an image")
    data = (root / "frame-000002.depth.png").read_bytes()
    (root / "frame-000002.depth.png").write_bytes(data[: len(data) // 2])
    (root / "frame-000003.pose.txt").unlink()
    (root / "frame-000004.pose.txt").write_text("1 0 0\n0 1 0\n")
    ds = SevenScenes(root)
    assert len(ds) == 5
    ds[0].validate()
    for k, name in [(1, "frame-000001.color.png"), (2, "frame-000002.depth.png"), (3, "frame-000003.pose.txt"),
                    (4, "frame-000004.pose.txt")]:
        with pytest.raises(DatasetError, match=name) as info:
            ds[k]
        assert info.value.path is not None and info.value.path.name == name
    errors: list[DatasetError] = []
    frames = list(iter_frames(ds, errors))
    assert [f.index for f in frames] == [0] and len(errors) == 4


def test_truncated_jpeg_and_wrong_depth_type(tmp_path):
    root = make_sevenscenes(tmp_path / "seq", n=2)
    rgb = color_image(32, 24, 0)
    write_rgb(root / "frame-000000.color.jpg", rgb)  # a .jpg takes precedence over the .png
    data = (root / "frame-000000.color.jpg").read_bytes()
    (root / "frame-000000.color.jpg").write_bytes(data[: len(data) - 40])
    cv2.imwrite(str(root / "frame-000001.depth.png"), np.zeros((24, 32), np.uint8))  # 8-bit depth
    ds = SevenScenes(root)
    with pytest.raises(DatasetError, match="truncated"):
        ds[0]
    with pytest.raises(DatasetError, match="uint16"):
        ds[1]


def test_sevenscenes_shared_data():
    if not (REDKITCHEN / "camera-intrinsics.txt").is_file():
        pytest.skip(f"shared 7-Scenes data not found at {REDKITCHEN} (only present on the project's test machines)")
    ds = open_dataset(REDKITCHEN, stride=5, max_frames=8)
    assert isinstance(ds, SevenScenes) and len(ds) == 8
    intr = ds.intrinsics
    assert (intr.width, intr.height, intr.fx, intr.fy, intr.cx, intr.cy) == (640, 480, 585.0, 585.0, 320.0, 240.0)
    f0, f1 = ds[0], ds[1]
    for f in (f0, f1):
        f.validate()
        assert f.rgb.shape == (480, 640, 3)
        valid = f.depth[f.depth > 0]
        assert valid.size > 0.5 * f.depth.size and 0.1 <= valid.min() and valid.max() <= 5.0
        assert is_valid_pose(f.pose)
    assert f1.stamp == pytest.approx(5 / 30.0) and f1.index == 1
    # rotations are re-orthonormalised (the files drift by ~2e-4)
    np.testing.assert_allclose(f0.pose, np.loadtxt(REDKITCHEN / "frame-000000.pose.txt"), atol=1e-3)
    # Poses and depth agree: frame 0's points land on frame 5's depth surface.
    pts, _ = backproject(f0.depth, f0.intrinsics, f0.pose, stride=8)
    u, v, z = project(pts, f1.intrinsics, f1.pose)
    ui, vi = np.round(u).astype(int), np.round(v).astype(int)
    inside = (z > 0) & (ui >= 0) & (ui < 640) & (vi >= 0) & (vi < 480)
    d1 = f1.depth[vi[inside], ui[inside]]
    ok = d1 > 0
    err = np.abs(d1[ok] - z[inside][ok])
    assert ok.sum() > 500 and np.median(err) < 0.03


# --------------------------------------------------------------------------------------------
# TUM RGB-D


def test_associate_one_to_one():
    a = np.array([0.0, 0.033, 0.066, 0.1])
    b = np.array([0.005, 0.034, 0.5])
    assert associate(a, b, 0.02) == [(0, 0), (1, 1)]


def test_quaternion_pose_roundtrip():
    T = pose_matrix(3)
    np.testing.assert_allclose(quaternion_pose(T[:3, 3], rotation_to_quaternion(T[:3, :3])), T, atol=1e-12)
    for q in ([0, 0, 0, 0], [np.nan, 0, 0, 1]):
        with pytest.raises(ValueError):  # the TUM reader marks such a pose unusable
            quaternion_pose(T[:3, 3], q)


def test_tum(tmp_path):
    root = make_tum(tmp_path / "rgbd_dataset_freiburg1_desk")
    assert detect_format(root) == "tum"
    ds = open_dataset(root)
    assert isinstance(ds, TUMRGBD)
    assert len(ds) == 4 and ds.unmatched == 1  # colour frame 3 has no depth
    intr = ds.intrinsics
    assert (intr.width, intr.height, intr.fx, intr.fy, intr.cx, intr.cy) == (32, 24, 525.0, 525.0, 319.5, 239.5)
    t0 = 1305031102.175304
    f = ds[3]  # the fourth kept frame is colour frame 4
    assert f.index == 3 and f.stamp == pytest.approx(t0 + 4 / 30.0)
    assert tuple(f.rgb[3, 3]) == (160, 200, 10)
    assert f.depth[3, 3] == pytest.approx(2.0, abs=1e-4)  # scale 5000
    # Nearest ground truth to t0 + 4/30 (= t0 + 0.1333) is sample j with t0 - 0.02 + j/100: j = 15.
    np.testing.assert_allclose(f.pose, pose_matrix(15), atol=1e-6)
    np.testing.assert_allclose(ds[0].pose, pose_matrix(2), atol=1e-6)


def test_tum_camera_file_and_missing_pose(tmp_path):
    root = make_tum(tmp_path / "seq")
    (root / "camera.txt").write_text("517.3 516.5 318.6 255.3 0.2624 -0.9531 -0.0054 0.0026 1.1633\n")
    lines = (root / "groundtruth.txt").read_text().splitlines()
    # keep only the ground truth near the first colour frame
    (root / "groundtruth.txt").write_text("\n".join(lines[:5]) + "\n")
    ds = TUMRGBD(root)
    assert (ds.intrinsics.fx, ds.intrinsics.fy, ds.intrinsics.cx, ds.intrinsics.cy) == (517.3, 516.5, 318.6, 255.3)
    assert len(ds) == 1 and ds.unmatched == 4


def test_tum_bad_lists(tmp_path):
    root = make_tum(tmp_path / "seq")
    (root / "groundtruth.txt").write_text("1305031102.1 1 2 3\n")
    with pytest.raises(DatasetError, match="groundtruth.txt"):
        TUMRGBD(root)
    (root / "groundtruth.txt").unlink()
    with pytest.raises(DatasetError, match="groundtruth.txt"):
        TUMRGBD(root)


# --------------------------------------------------------------------------------------------
# Replica (NICE-SLAM renders)


def test_replica(tmp_path):
    root = make_replica(tmp_path / "Replica")
    assert detect_format(root) == "replica"
    assert detect_format(root / "results") == "replica"
    ds = open_dataset(root, depth=DepthConfig(max_depth=8.0))
    assert isinstance(ds, Replica) and len(ds) == 3
    intr = ds.intrinsics
    assert (intr.width, intr.height, intr.fx, intr.fy, intr.cx, intr.cy) == (40, 20, 20.0, 21.0, 19.5, 9.5)
    f = ds[2]
    f.validate()
    assert f.depth[5, 5] == pytest.approx(1.5, abs=1e-3)  # scale 6553.5
    assert f.depth[1, 1] == pytest.approx(9.0, abs=1e-3) or f.depth[1, 1] == 0.0
    np.testing.assert_allclose(f.pose, pose_matrix(2), atol=1e-8)
    assert f.stamp == pytest.approx(2 / 30.0)
    assert np.abs(f.rgb[5, 5].astype(int) - [80, 200, 10]).max() <= 3  # JPEG


def test_replica_cam_params_in_sequence_folder(tmp_path):
    root = make_replica(tmp_path / "Replica", cam_in_parent=False)
    assert Replica(root).intrinsics.fy == 21.0


def test_replica_errors(tmp_path):
    root = make_replica(tmp_path / "Replica", n=3)
    (root / "traj.txt").write_text(" ".join(f"{v}" for v in pose_matrix(0).ravel()) + "\n")  # one pose only
    ds = Replica(root)
    ds[0]
    with pytest.raises(DatasetError, match="traj.txt"):
        ds[1]
    (tmp_path / "Replica" / "cam_params.json").write_text("{\"camera\": {\"w\": 40}}")
    with pytest.raises(DatasetError, match="cam_params.json"):
        Replica(root)
    (tmp_path / "Replica" / "cam_params.json").unlink()
    with pytest.raises(DatasetError, match="cam_params.json"):  # 40x20 renders need their camera file
        Replica(root)


# --------------------------------------------------------------------------------------------
# ScanNet exports


def test_scannet(tmp_path):
    root = make_scannet(tmp_path / "scene0000_00")
    assert detect_format(root) == "scannet"
    ds = open_dataset(root)
    assert isinstance(ds, ScanNet) and len(ds) == 4
    intr = ds.intrinsics  # depth intrinsics
    assert (intr.width, intr.height, intr.fx, intr.fy, intr.cx, intr.cy) == (32, 24, 28.0, 29.0, 15.5, 11.5)
    f = ds[1]
    f.validate()
    assert f.rgb.shape == (24, 32, 3)  # colour resized to the depth size
    assert np.abs(f.rgb[5, 5].astype(int) - [40, 200, 10]).max() <= 3
    assert f.depth[5, 5] == pytest.approx(1.25)
    np.testing.assert_allclose(f.pose, pose_matrix(1), atol=1e-9)


def test_scannet_numeric_order_and_invalid_pose(tmp_path):
    root = make_scannet(tmp_path / "scene", n=12)
    bad = np.full((4, 4), -np.inf)
    np.savetxt(root / "pose" / "10.txt", bad)
    ds = ScanNet(root)
    assert [r.number for r in ds.records] == list(range(12))  # 10 after 9, not after 1
    with pytest.raises(DatasetError, match="10.txt"):
        ds[10]
    errors: list[DatasetError] = []
    assert len(list(iter_frames(ds, errors))) == 11 and len(errors) == 1
    assert "inf" in str(errors[0])


def test_scannet_color_intrinsics_fallback(tmp_path):
    root = make_scannet(tmp_path / "scene", n=2)
    (root / "intrinsic" / "intrinsic_depth.txt").unlink()
    ds = ScanNet(root)
    assert ds.intrinsics.fx == pytest.approx(28.0) and ds.intrinsics.cx == pytest.approx(15.75)


# --------------------------------------------------------------------------------------------
# open_dataset


def test_open_dataset_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        open_dataset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="matches no known dataset format"):
        open_dataset(tmp_path / "empty")
    with pytest.raises(DatasetError, match="unknown dataset kind"):
        open_dataset(tmp_path / "empty", kind="kitti")
    with pytest.raises(DatasetError):
        open_dataset(tmp_path / "empty", kind="tum")
    assert issubclass(DatasetError, ValueError)


def test_open_dataset_synthetic():
    ds = open_dataset("synthetic:3", max_frames=4)
    assert len(ds) == 4 and ds.name == "synthetic-3"
    assert detect_format("synthetic") == "synthetic"


# --------------------------------------------------------------------------------------------
# 3DMatch (issue 10, fault 5): camera-intrinsics.txt at the top, frames in seq-NN/ folders


def make_threedmatch(root: Path, sequences=("seq-01", "seq-02"), n: int = 3) -> Path:
    for s, name in enumerate(sequences):
        seq = make_sevenscenes(root / name, n=n + s)
        (seq / "camera-intrinsics.txt").unlink()  # 3DMatch keeps one file for the whole scene
    np.savetxt(root / "camera-intrinsics.txt", [[28.0, 0, 15.0], [0, 29.0, 11.0], [0, 0, 1]])
    return root


def test_threedmatch_layout_is_detected_and_read(tmp_path):
    root = make_threedmatch(tmp_path / "7-scenes-redkitchen")
    assert detect_format(root) == "3dmatch"
    from core3d_ros.core.datasets import list_sequences

    assert list_sequences(root) == ["seq-01", "seq-02"]
    ds = open_dataset(root, sequence="seq-02")
    assert len(ds) == 4 and ds.name == "7-scenes-redkitchen/seq-02"
    assert ds.intrinsics.fx == 28.0 and ds.intrinsics.fy == 29.0  # from the top-level file
    f = ds[2]
    f.validate()
    np.testing.assert_allclose(f.pose, pose_matrix(2), atol=1e-9)
    assert tuple(f.rgb[5, 5]) == (80, 200, 10) and f.depth[5, 5] == pytest.approx(1.5)
    assert len(open_dataset(root, sequence="seq-01", stride=2)) == 2
    # several sequences and none chosen: a clear error naming them
    with pytest.raises(DatasetError, match="seq-01, seq-02"):
        open_dataset(root)
    with pytest.raises(DatasetError, match="no sequence 'seq-07'.*seq-01, seq-02"):
        open_dataset(root, sequence="seq-07")
    # a single sequence needs no choice
    one = make_threedmatch(tmp_path / "one", sequences=("seq-01",))
    assert len(open_dataset(one)) == 3


def test_threedmatch_without_intrinsics_falls_back_like_sevenscenes(tmp_path):
    root = make_threedmatch(tmp_path / "scene")
    (root / "camera-intrinsics.txt").unlink()
    ds = open_dataset(root, kind="3dmatch", sequence="seq-01")
    assert ds.intrinsics.fx == 585.0  # the 7-Scenes default, as for a 7-Scenes scene folder


def test_cli_maps_each_sequence_in_turn_or_the_one_chosen(tmp_path, capsys):
    from core3d_ros.cli import main

    root = make_threedmatch(tmp_path / "scene")
    out = tmp_path / "out"
    assert main(["map", str(root), "--sequence", "seq-02", "--out", str(out / "one")]) == 0
    assert (out / "one" / "map.npz").exists() and (out / "one" / "map.ply").exists()
    assert main(["map", str(root), "--out", str(out / "all")]) == 0
    printed = capsys.readouterr().out
    assert "seq-01" in printed and "seq-02" in printed
    for seq in ("seq-01", "seq-02"):
        assert (out / "all" / seq / "map.npz").exists() and (out / "all" / seq / "map.png").exists()
    assert main(["map", str(root), "--sequence", "seq-09", "--out", str(out / "x")]) == 2
