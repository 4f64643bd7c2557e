"""SAM and Semantic-SAM adapters.

SAM: the real loading path (architecture from segment_anything's registry, a state dict of random
weights saved to a temporary checkpoint and loaded back) and the real level-tagging generator.
Only the ViT image encoder is swapped for a stub after loading: a 1024x1024 ViT-B forward takes
about 30 s on a 2-core CPU. Prompt encoder, mask decoder, grid, filters, NMS and conversion run
for real. Semantic-SAM is not installable from PyPI: its adapter is checked against a generator
that returns the documented record format.
"""
from __future__ import annotations

import importlib
import sys

import numpy as np
import pytest

from core3d_ros.config import SegmenterConfig
from core3d_ros.core.camera import CameraIntrinsics
from core3d_ros.core.frame import Frame
from core3d_ros.core.segment.base import available_segmenters, make_segmenter
from core3d_ros.core.segment.sam import (
    SamSegmenter,
    SegmenterError,
    decode_uncompressed_rle,
    records_to_masks,
)
from core3d_ros.core.segment.semantic_sam import SemanticSamSegmenter


def make_frame(h=96, w=128, seed=0) -> Frame:
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    depth = np.full((h, w), 1.5, np.float32)
    intr = CameraIntrinsics(w, h, 100.0, 100.0, w / 2, h / 2)
    return Frame(rgb=rgb, depth=depth, intrinsics=intr, pose=np.eye(4))


def sam_record(mask: np.ndarray, iou=0.95, stability=0.97, point=(10.0, 10.0), **extra) -> dict:
    """A record in segment_anything's documented automatic-generator format."""
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    rec = {
        "segmentation": mask,
        "area": int(mask.sum()),
        "bbox": [x0, y0, int(xs.max()) - x0, int(ys.max()) - y0],
        "predicted_iou": iou,
        "point_coords": [list(point)],
        "stability_score": stability,
        "crop_box": [0, 0, mask.shape[1], mask.shape[0]],
    }
    rec.update(extra)
    return rec


def box_mask(shape, y0, y1, x0, x1):
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


class FakeGenerator:
    def __init__(self, records):
        self.records = records
        self.inputs = []

    def generate(self, image):
        self.inputs.append(image)
        return self.records


def test_modules_register_without_packages():
    assert {"sam", "semantic_sam"} <= set(available_segmenters())


def test_records_to_masks_conversion():
    shape = (40, 50)
    big = box_mask(shape, 0, 30, 0, 40)
    small = box_mask(shape, 5, 10, 5, 10)
    recs = [
        sam_record(big, iou=1.02, level=0),  # predicted IoU can exceed 1: clipped
        sam_record(small, iou=0.7, level=2),
        sam_record(np.zeros(shape, bool) | box_mask(shape, 0, 1, 0, 1), iou=0.9),  # no level key
    ]
    recs[2]["segmentation"] = np.zeros(shape, bool)  # empty: dropped
    masks = records_to_masks(recs)
    assert len(masks) == 2
    assert masks[0].score == 1.0 and masks[0].level == 0 and masks[0].mask.dtype == bool
    assert masks[1].score == pytest.approx(0.7) and masks[1].level == 2
    np.testing.assert_array_equal(masks[1].mask, small)
    # explicit level and resize to the frame
    up = records_to_masks([sam_record(small)], shape=(80, 100), level=4)[0]
    assert up.mask.shape == (80, 100) and up.level == 4 and up.area == 4 * small.sum()


def test_uncompressed_rle_decoding():
    m = np.zeros((4, 3), bool)
    m[1:3, 1] = True
    m[0, 2] = True
    flat = m.T.reshape(-1)  # column-major, as segment_anything encodes
    counts, cur, run = [], False, 0
    for v in flat:
        if v == cur:
            run += 1
        else:
            counts.append(run)
            cur, run = v, 1
    counts.append(run)
    rle = {"size": [4, 3], "counts": counts}
    np.testing.assert_array_equal(decode_uncompressed_rle(rle), m)
    masks = records_to_masks([{"segmentation": rle, "predicted_iou": 0.9}])
    np.testing.assert_array_equal(masks[0].mask, m)


def test_sam_segmenter_with_fake_generator_filters_levels():
    frame = make_frame()
    shape = frame.shape
    recs = [sam_record(box_mask(shape, 0, 60, 0, 60), level=0), sam_record(box_mask(shape, 70, 80, 70, 80), level=2)]
    gen = FakeGenerator(recs)
    seg = SamSegmenter(SegmenterConfig(name="sam"), generator=gen)
    assert [m.level for m in seg.segment(frame)] == [0, 2]
    assert gen.inputs[0].shape == (*shape, 3) and gen.inputs[0].dtype == np.uint8
    only_coarse = SamSegmenter(SegmenterConfig(name="sam", granularity_levels=[1]), generator=gen)
    assert [m.level for m in only_coarse.segment(frame)] == [0]
    with pytest.raises(SegmenterError, match="granularity_levels"):
        SamSegmenter(SegmenterConfig(name="sam", granularity_levels=[5, 6]), generator=gen)


def test_sam_clear_errors(tmp_path):
    pytest.importorskip("segment_anything")
    with pytest.raises(SegmenterError, match="segmenter.checkpoint is not set"):
        make_segmenter(SegmenterConfig(name="sam", checkpoint=""))
    with pytest.raises(SegmenterError, match="no such file"):
        make_segmenter(SegmenterConfig(name="sam", checkpoint=str(tmp_path / "missing.pth")))
    with pytest.raises(SegmenterError, match="model_type"):
        make_segmenter(SegmenterConfig(name="sam", model_type="L", checkpoint=str(tmp_path / "x.pth")))


def test_sam_missing_package_message(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "segment_anything", None)  # import fails as if not installed
    ckpt = tmp_path / "sam.pth"
    ckpt.write_bytes(b"")
    with pytest.raises(SegmenterError, match="pip install segment-anything"):
        make_segmenter(SegmenterConfig(name="sam", checkpoint=str(ckpt)))


@pytest.fixture(scope="module")
def sam_checkpoint(tmp_path_factory):
    torch = pytest.importorskip("torch")
    sa = pytest.importorskip("segment_anything")
    torch.manual_seed(0)
    model = sa.sam_model_registry["vit_b"](checkpoint=None)
    path = tmp_path_factory.mktemp("sam") / "sam_vit_b_random.pth"
    torch.save(model.state_dict(), path)
    return path


def test_sam_real_loading_and_level_tagging(sam_checkpoint):
    import torch

    cfg = SegmenterConfig(
        name="sam",
        model_type="vit_b",
        checkpoint=str(sam_checkpoint),
        device="cpu",
        points_per_side=2,  # 4 prompts: the mask decoder costs ~0.7 s per prompt on a CPU
        pred_iou_thresh=0.0,  # random weights: keep everything the decoder says
        stability_score_thresh=0.0,
    )
    seg = make_segmenter(cfg)
    assert isinstance(seg, SamSegmenter)
    gen = seg.generator
    model = gen.predictor.model
    # the checkpoint's weights are in the model
    saved = torch.load(sam_checkpoint, map_location="cpu", weights_only=True)
    key = "mask_decoder.iou_prediction_head.layers.0.weight"
    assert torch.equal(model.state_dict()[key], saved[key])

    class StubImageEncoder(torch.nn.Module):
        img_size = model.image_encoder.img_size

        def forward(self, x):
            g = torch.Generator().manual_seed(1)
            return torch.randn(x.shape[0], 256, 64, 64, generator=g)

    model.image_encoder = StubImageEncoder()
    frame = make_frame()
    h, w = frame.shape

    # The batch step: every prompt's three outputs get levels 0, 1, 2 by decreasing area.
    from segment_anything.utils.amg import area_from_rle

    gen.predictor.set_image(frame.rgb)
    points = gen.point_grids[0] * np.array([[w, h]])
    data = gen._process_batch(points, (h, w), [0, 0, w, h], (h, w))
    gen.predictor.reset_image()
    levels = data["levels"].numpy()
    areas = np.array([area_from_rle(r) for r in data["rles"]])
    pts = data["points"].numpy()
    assert len(levels) == 3 * len(points)  # thresholds at 0 keep every output
    for p in points:
        sel = np.all(pts == p, axis=1)
        assert sorted(levels[sel]) == [0, 1, 2]
        by_level = areas[sel][np.argsort(levels[sel])]
        assert np.all(np.diff(by_level) <= 0)

    # The whole generator: records carry their level into Mask2D.
    masks = seg.segment(frame)
    assert masks, "the random decoder produced no mask at all"
    assert all(m.mask.shape == frame.shape and 0.0 <= m.score <= 1.0 for m in masks)
    assert {m.level for m in masks} <= {0, 1, 2}


def test_sam_checkpoint_of_wrong_architecture(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("segment_anything")
    path = tmp_path / "wrong.pth"
    torch.save({"image_encoder.pos_embed": torch.zeros(1)}, path)
    with pytest.raises(SegmenterError, match="does not fit"):
        make_segmenter(SegmenterConfig(name="sam", checkpoint=str(path), device="cpu"))


def test_semantic_sam_adapter_with_fake_generators():
    torch = pytest.importorskip("torch")
    frame = make_frame(h=96, w=128)
    cfg = SegmenterConfig(name="semantic_sam", model_type="L", granularity_levels=[1, 3, 6], input_short_edge=192)
    # Generators see the resized image (short side 192 -> 192x256) and answer at that size.
    big = box_mask((192, 256), 0, 150, 0, 200)
    part = box_mask((192, 256), 20, 40, 20, 60)
    gens = {
        1: FakeGenerator([sam_record(big, iou=0.97)]),
        3: FakeGenerator([sam_record(big, iou=0.93), sam_record(part, iou=0.91)]),
        6: FakeGenerator([sam_record(part, iou=0.5)]),
    }
    seg = SemanticSamSegmenter(cfg, generators=gens)
    masks = seg.segment(frame)
    assert [m.level for m in masks] == [0, 2, 2, 5]
    assert all(m.mask.shape == frame.shape for m in masks)
    assert masks[0].area == pytest.approx(75 * 100, rel=0.02)
    assert masks[3].score == pytest.approx(0.5)
    image = gens[1].inputs[0]
    assert isinstance(image, torch.Tensor) and tuple(image.shape) == (3, 192, 256) and image.dtype == torch.uint8


def test_semantic_sam_clear_errors(tmp_path):
    with pytest.raises(SegmenterError, match="granularity_levels"):
        SemanticSamSegmenter(SegmenterConfig(name="semantic_sam"), generators={7: FakeGenerator([])})
    ckpt = tmp_path / "swinl.pth"
    ckpt.write_bytes(b"")
    with pytest.raises(SegmenterError, match="model_type"):
        make_segmenter(SegmenterConfig(name="semantic_sam", model_type="vit_b", checkpoint=str(ckpt)))
    with pytest.raises(SegmenterError, match="checkpoint"):
        make_segmenter(SegmenterConfig(name="semantic_sam", model_type="L", checkpoint=str(tmp_path / "none.pth")))
    if importlib.util.find_spec("semantic_sam") is None:
        with pytest.raises(SegmenterError, match="docs/semantic_sam.md"):
            make_segmenter(SegmenterConfig(name="semantic_sam", model_type="L", checkpoint=str(ckpt), device="cpu"))
    with pytest.raises(SegmenterError, match="not a Semantic-SAM clone"):
        make_segmenter(
            SegmenterConfig(
                name="semantic_sam", model_type="T", checkpoint=str(ckpt), device="cpu", semantic_sam_root=str(tmp_path)
            )
        )


def _fake_semantic_sam_clone(root):
    """A folder with Semantic-SAM's import surface; build_model records the options it got."""
    (root / "semantic_sam").mkdir(parents=True)
    (root / "utils").mkdir()
    (root / "configs").mkdir()
    (root / "configs" / "semantic_sam_only_sa-1b_swinT.yaml").write_text(
        "MODEL:\n  BACKBONE:\n    NAME: swin\n    PRETRAINED: 'https://example.invalid/swin_tiny.pth'\n    LOAD_PRETRAINED: true\n"
    )
    (root / "utils" / "__init__.py").write_text("")
    (root / "utils" / "arguments.py").write_text(
        "import yaml\ndef load_opt_from_config_file(path):\n    return yaml.safe_load(open(path))\n"
    )
    (root / "semantic_sam" / "__init__.py").write_text(
        "SEEN = []\n"
        "def build_model(opt):\n"
        "    bb = opt['MODEL']['BACKBONE']\n"
        "    if bb['LOAD_PRETRAINED']:\n"
        "        raise OSError('network fetch of ' + bb['PRETRAINED'])\n"
        "    SEEN.append(opt)\n"
        "    return object()\n"
        "class SemanticSamAutomaticMaskGenerator:\n"
        "    def __init__(self, model, level, **kw):\n"
        "        self.level = level\n"
    )
    (root / "semantic_sam" / "BaseModel.py").write_text(
        "class BaseModel:\n"
        "    def __init__(self, opt, model):\n        self.opt = opt\n"
        "    def from_pretrained(self, path):\n        self.path = path\n        return self\n"
        "    def eval(self):\n        return self\n"
        "    def to(self, device):\n        return self\n"
    )


def test_semantic_sam_builds_without_network(tmp_path, monkeypatch):
    """The configs' backbone URL is never fetched: LOAD_PRETRAINED is off when the model is built."""
    import sys

    _fake_semantic_sam_clone(tmp_path / "clone")
    ckpt = tmp_path / "swint.pth"
    ckpt.write_bytes(b"")
    for name in ("semantic_sam", "semantic_sam.BaseModel", "utils", "utils.arguments"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setattr(sys, "path", list(sys.path))
    cfg = SegmenterConfig(
        name="semantic_sam", model_type="T", checkpoint=str(ckpt), device="cpu",
        semantic_sam_root=str(tmp_path / "clone"), granularity_levels=[2, 4],
    )
    seg = make_segmenter(cfg)
    assert sorted(seg.generators) == [2, 4]
    assert [g.level for g in seg.generators.values()] == [[2], [4]]
    (opt,) = sys.modules["semantic_sam"].SEEN
    assert opt["MODEL"]["BACKBONE"]["LOAD_PRETRAINED"] is False
    assert opt["MODEL"]["BACKBONE"]["PRETRAINED"] == ""
    for name in ("semantic_sam", "semantic_sam.BaseModel", "utils", "utils.arguments"):
        sys.modules.pop(name, None)
