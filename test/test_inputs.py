"""Camera inputs robot drivers send: lens distortion (undone or refused) and compressed images."""
from __future__ import annotations

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from core3d_ros.core.camera import CameraIntrinsics  # noqa: E402
from core3d_ros.core.frame import FrameError  # noqa: E402
from core3d_ros.core.undistort import Undistorter  # noqa: E402

INTR = CameraIntrinsics(160, 120, 150.0, 150.0, 79.5, 59.5)
D_PLUMB = [-0.25, 0.08, 0.001, -0.001, 0.0]


def _checkerboard() -> np.ndarray:
    """A smooth pattern (interpolation error stays small) with structure everywhere."""
    y, x = np.mgrid[0:120, 0:160].astype(np.float64)
    board = (127 + 110 * np.sin(x / 7.0) * np.cos(y / 9.0)).astype(np.uint8)
    return np.repeat(board[:, :, None], 3, axis=2)


def _distort(img: np.ndarray, d: list[float], interp: int) -> np.ndarray:
    """What a lens with coefficients d makes of img: sample img at the undistorted positions."""
    K = INTR.matrix.astype(np.float64)
    y, x = np.mgrid[0:120, 0:160].astype(np.float64)
    pts = np.stack([x.ravel(), y.ravel()], axis=1).reshape(-1, 1, 2)
    und = cv2.undistortPoints(pts, K, np.asarray(d), P=K).reshape(120, 160, 2).astype(np.float32)
    return cv2.remap(img, und[..., 0], und[..., 1], interp)


def test_zero_distortion_is_a_no_op():
    u = Undistorter()
    rgb, depth = _checkerboard(), np.ones((120, 160), np.float32)
    out = u.apply(INTR, "plumb_bob", [0.0] * 5, rgb, depth)
    assert out[0] is rgb and out[1] is depth and u.built == 0
    assert u.apply(INTR, "", [], rgb, depth)[0] is rgb


@pytest.mark.parametrize("model, d", [("plumb_bob", D_PLUMB), ("rational_polynomial", D_PLUMB[:5] + [0.01, 0.0, 0.0])])
def test_distortion_is_undone(model, d):
    truth = _checkerboard()
    distorted = _distort(truth, d, cv2.INTER_LINEAR)
    u = Undistorter()
    depth = np.full((120, 160), 2.0, np.float32)
    rgb, depth_u, _ = u.apply(INTR, model, d, distorted, depth)
    core = (slice(20, 100), slice(25, 135))  # away from the black border the remap leaves
    err_after = np.abs(rgb[core].astype(int) - truth[core].astype(int)).mean()
    err_before = np.abs(distorted[core].astype(int) - truth[core].astype(int)).mean()
    assert err_after < 0.3 * err_before, (err_before, err_after)
    assert set(np.unique(depth_u)) <= {0.0, 2.0}  # nearest: no invented depth values
    u.apply(INTR, model, d, distorted, depth)
    assert u.built == 1  # the remap tables are cached per camera


def test_instances_keep_their_ids():
    ids = np.zeros((120, 160), np.int32)
    ids[40:80, 60:100] = 123456789
    u = Undistorter()
    _, _, out = u.apply(INTR, "plumb_bob", D_PLUMB, _checkerboard(), np.ones((120, 160), np.float32), ids)
    assert set(np.unique(out)) == {0, 123456789}


@pytest.mark.parametrize(
    "model, d, reason",
    [
        ("plumb_bob", [np.nan, 0, 0, 0, 0], "bad_distortion"),
        ("plumb_bob", [0.1, np.inf, 0, 0, 0], "bad_distortion"),
        ("plumb_bob", [0.1, 0.1], "bad_distortion"),
        ("some_vendor_model", [0.1, 0.0, 0.0, 0.0, 0.0], "unsupported_distortion"),
    ],
)
def test_bad_distortion_is_refused_by_reason(model, d, reason):
    with pytest.raises(FrameError) as e:
        Undistorter().apply(INTR, model, d, _checkerboard(), np.ones((120, 160), np.float32))
    assert e.value.reason == reason


# --------------------------------------------------------------------------- compressed images

conv = pytest.importorskip("core3d_ros.ros.conversions", reason="ROS 2 message packages not installed")


def test_compressed_colour_round_trip():
    rgb = np.zeros((30, 40, 3), np.uint8)
    rgb[:, :20] = (200, 30, 10)
    msg = conv.rgb_to_compressed(rgb, "png", stamp=1.5, frame_id="cam")
    np.testing.assert_array_equal(conv.compressed_to_rgb(msg), rgb)
    jpeg = conv.compressed_to_rgb(conv.rgb_to_compressed(rgb, "jpeg"))
    assert jpeg.shape == rgb.shape and np.abs(jpeg.astype(int) - rgb).mean() < 8


def test_compressed_depth_round_trip():
    depth_mm = np.arange(30 * 40, dtype=np.uint16).reshape(30, 40) + 500
    raw, enc = conv.compressed_depth_to_raw(conv.depth_to_compressed(depth_mm, "16UC1"))
    assert enc == "16UC1"
    np.testing.assert_array_equal(raw, depth_mm)
    metres = np.linspace(0.5, 4.0, 30 * 40, dtype=np.float32).reshape(30, 40)
    metres[0, 0] = np.nan
    raw, enc = conv.compressed_depth_to_raw(conv.depth_to_compressed(metres, "32FC1"))
    assert enc == "32FC1" and np.isnan(raw[0, 0])
    ok = np.isfinite(metres)
    # inverse-depth quantisation: error grows with z^2 (a/(q-b)), < 1 cm up to 4 m here
    assert np.nanmax(np.abs(raw[ok] - metres[ok])) < 0.01


@pytest.mark.parametrize(
    "data, fmt",
    [
        (b"", "jpeg"),
        (b"not an image at all", "jpeg"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "png"),  # a PNG signature, then garbage
    ],
)
def test_compressed_colour_that_is_not_an_image(data, fmt):
    from sensor_msgs.msg import CompressedImage

    with pytest.raises(conv.ImageError):
        conv.compressed_to_rgb(CompressedImage(format=fmt, data=data))


@pytest.mark.parametrize(
    "fmt, data",
    [
        ("16UC1; compressedDepth png", b"\x00" * 12 + b"garbage"),
        ("16UC1; compressedDepth png", b"short"),
        ("16UC1; png", b"\x00" * 12 + b"\x89PNG\r\n\x1a\n"),  # not the compressedDepth layout
        ("8UC3; compressedDepth png", b"\x00" * 12 + b"\x89PNG\r\n\x1a\n"),
        ("16UC1; compressedDepth rvl", b"\x00" * 40),
    ],
)
def test_compressed_depth_that_is_not_a_depth_image(fmt, data):
    from sensor_msgs.msg import CompressedImage

    with pytest.raises(conv.ImageError):
        conv.compressed_depth_to_raw(CompressedImage(format=fmt, data=data))
