"""Encoders, context-aware crops, fusion, view quality and label guesses.

The open_clip tests build a small real architecture (ViT-S-32) with random weights, save its
state dict to a temporary checkpoint and load it through the encoder's own loading path.
"""
from __future__ import annotations

import numpy as np
import pytest

from core3d_ros.config import EmbedConfig
from core3d_ros.core.embed import (
    CROP_KINDS,
    DEFAULT_VOCABULARY,
    EncoderError,
    LabelGuesser,
    MeanColorEncoder,
    available_encoders,
    crop_boxes,
    embed_masks,
    extract_crops,
    fuse_embeddings,
    make_encoder,
    mask_bbox,
    scale_box,
    view_quality,
)
from core3d_ros.core.segment.base import Mask2D

H, W = 60, 80


def image(seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 255, (H, W, 3), dtype=np.uint8)  # no zero pixel


def rect_mask(y0, y1, x0, x1, shape=(H, W)) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


# ---------------------------------------------------------------------------- crops


def test_boxes_and_scaling():
    m = rect_mask(20, 30, 30, 50)
    assert mask_bbox(m) == (30, 20, 50, 30)
    assert scale_box((30, 20, 50, 30), 1.0, W, H) == (30, 20, 50, 30)
    # 2.5x about the centre (40, 25): half sizes 25 and 12.5 -> rounded outwards
    assert scale_box((30, 20, 50, 30), 2.5, W, H) == (15, 12, 65, 38)
    b = crop_boxes(m, EmbedConfig())
    assert b["mask"] == b["bbox"] == (30, 20, 50, 30)
    assert b["huge"] == (0, 5, 80, 45)  # 80 wide clipped to the image
    assert b["surround"] == (10, 10, 70, 40)
    with pytest.raises(ValueError):
        mask_bbox(np.zeros((H, W), bool))


@pytest.mark.parametrize("corner", ["tl", "br"])
def test_crops_at_image_corners_are_clipped_and_non_empty(corner):
    rgb = image()
    if corner == "tl":
        m = rect_mask(0, 8, 0, 10)
        expect = {"mask": (0, 0, 10, 8), "large": (0, 0, 18, 14), "huge": (0, 0, 25, 20), "surround": (0, 0, 20, 16)}
    else:
        m = rect_mask(H - 8, H, W - 10, W)
        expect = {
            "mask": (W - 10, H - 8, W, H),
            "large": (W - 18, H - 14, W, H),
            "huge": (W - 25, H - 20, W, H),
            "surround": (W - 20, H - 16, W, H),
        }
    boxes = crop_boxes(m, EmbedConfig())
    for kind, box in expect.items():
        assert boxes[kind] == box, kind
    crops, index = extract_crops(rgb, [Mask2D(mask=m)], EmbedConfig())
    assert index.shape == (1, 5) and len(crops) == 5
    for k, kind in enumerate(CROP_KINDS):
        x0, y0, x1, y1 = boxes[kind]
        crop = crops[index[0, k]]
        assert crop.shape == (y1 - y0, x1 - x0, 3) and crop.size > 0 and crop.dtype == np.uint8


def test_single_pixel_mask_in_corner():
    m = np.zeros((H, W), bool)
    m[H - 1, W - 1] = True
    crops, index = extract_crops(image(), [m])
    assert crops[index[0, 0]].shape == (1, 1, 3)
    for c in crops:
        assert c.shape[0] >= 1 and c.shape[1] >= 1
    assert scale_box((W - 1, H - 1, W, H), 0.1, W, H) == (W - 1, H - 1, W, H)  # never empty


def test_mask_and_surroundings_crop_contents():
    rgb = image()
    m = rect_mask(20, 30, 30, 50)
    m[20:23, 30:33] = False  # not a full box: the mask crop zeroes the missing corner
    crops, index = extract_crops(rgb, [m], EmbedConfig())
    mask_crop, bbox_crop, _, _, sur = (crops[i] for i in index[0])
    np.testing.assert_array_equal(bbox_crop, rgb[20:30, 30:50])
    np.testing.assert_array_equal(mask_crop[3:, 3:], rgb[23:30, 33:50])
    assert not mask_crop[:3, :3].any()
    x0, y0, x1, y1 = crop_boxes(m)["surround"]
    inside = m[y0:y1, x0:x1]
    assert not sur[inside].any()  # the object is zeroed
    np.testing.assert_array_equal(sur[~inside], rgb[y0:y1, x0:x1][~inside])  # the rest untouched


def test_extract_crops_index_layout_and_errors():
    masks = [rect_mask(0, 10, 0, 10), rect_mask(20, 40, 20, 60), rect_mask(50, 60, 70, 80)]
    crops, index = extract_crops(image(), masks)
    assert len(crops) == 15
    np.testing.assert_array_equal(index, np.arange(15).reshape(3, 5))
    crops, index = extract_crops(image(), [])
    assert crops == [] and index.shape == (0, 5)
    with pytest.raises(ValueError, match="empty"):
        extract_crops(image(), [np.zeros((H, W), bool)])
    with pytest.raises(ValueError, match="shape"):
        extract_crops(image(), [np.ones((10, 10), bool)])


# ---------------------------------------------------------------------------- fusion


def expected_fused(rgb, mask, cfg, with_global=False):
    enc = MeanColorEncoder
    crops, index = extract_crops(rgb, [mask], cfg)
    e = [enc.expected(crops[i]).astype(np.float64) for i in index[0]]
    v = cfg.w_mask * e[0] + cfg.w_bbox * e[1] + cfg.w_large * e[2] + cfg.w_huge * e[3] - cfg.w_sur * e[4]
    v /= np.linalg.norm(v)
    if with_global:
        g = enc.expected(rgb).astype(np.float64)
        v = (1 - cfg.alpha_global) * v + cfg.alpha_global * g
        v /= np.linalg.norm(v)
    return v


def test_fusion_arithmetic_is_exact_with_the_test_encoder():
    rgb = image(3)
    masks = [rect_mask(10, 25, 10, 30), rect_mask(0, 8, 60, 80), rect_mask(40, 60, 0, 80)]
    cfg = EmbedConfig(name="mean_color")
    enc = make_encoder(cfg)
    assert isinstance(enc, MeanColorEncoder) and enc.semantic is False
    out = embed_masks(enc, rgb, [Mask2D(mask=m) for m in masks], cfg)
    assert out.shape == (3, 4) and out.dtype == np.float32
    assert enc.image_calls == 1  # all 15 crops in one batched call
    for i, m in enumerate(masks):
        np.testing.assert_allclose(out[i], expected_fused(rgb, m, cfg), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)

    # global-context blend
    cfg_g = EmbedConfig(name="mean_color", alpha_global=0.3)
    out_g = embed_masks(enc, rgb, masks, cfg_g)
    for i, m in enumerate(masks):
        np.testing.assert_allclose(out_g[i], expected_fused(rgb, m, cfg_g, with_global=True), atol=1e-6)

    # custom weights: the surroundings term is subtracted
    E = np.zeros((1, 5, 4), np.float32)
    E[0, :, 0] = 1.0
    E[0, 4] = [0, 1, 0, 0]
    f = fuse_embeddings(E, EmbedConfig(w_mask=1, w_bbox=0, w_large=0, w_huge=0, w_sur=1))
    np.testing.assert_allclose(f[0], np.array([1, -1, 0, 0]) / np.sqrt(2), atol=1e-6)
    with pytest.raises(ValueError):
        fuse_embeddings(np.zeros((2, 4, 3)), EmbedConfig())
    assert embed_masks(enc, rgb, [], cfg).shape == (0, 4)


def test_batches_are_chunked_by_batch_size():
    enc = MeanColorEncoder(batch_size=4)
    crops = [np.full((3, 3, 3), i, np.uint8) for i in range(10)]
    out = enc.encode_images(crops)
    assert enc.image_calls == 3 and out.shape == (10, 4)
    np.testing.assert_allclose(out[7], MeanColorEncoder.expected(crops[7]), atol=1e-6)
    with pytest.raises(EncoderError):
        enc.encode_images([np.zeros((3, 3), np.uint8)])


# ---------------------------------------------------------------------------- view quality


def test_view_quality_prefers_large_central_untruncated():
    shape = (H, W)
    central = rect_mask(20, 40, 30, 50)
    corner_touching = rect_mask(0, 20, 0, 20)
    corner_inside = rect_mask(2, 22, 2, 22)
    small_central = rect_mask(27, 33, 37, 43)
    large_central = rect_mask(10, 50, 15, 65)
    q = {k: view_quality(v, shape) for k, v in dict(
        central=central, corner_touching=corner_touching, corner_inside=corner_inside,
        small_central=small_central, large_central=large_central).items()}
    assert all(0.0 <= v <= 1.0 for v in q.values())
    assert q["large_central"] > q["central"] > q["small_central"]
    assert q["central"] > q["corner_inside"] > q["corner_touching"]
    assert view_quality(np.zeros(shape, bool), shape) == 0.0
    assert view_quality(Mask2D(mask=central), shape) == q["central"]
    full = np.ones(shape, bool)
    assert 0.0 < view_quality(full, shape) <= 1.0


# ---------------------------------------------------------------------------- encoders


def test_registry_and_text_cache():
    assert make_encoder(EmbedConfig(name="none")) is None
    assert {"none", "mean_color", "open_clip"} <= set(available_encoders())
    with pytest.raises(EncoderError, match="embed.name"):
        make_encoder(EmbedConfig(name="nope"))
    enc = MeanColorEncoder(text_cache_size=2)
    a = enc.encode_text(["a red chair", "something", "a red chair"])
    assert a.shape == (3, 4) and enc.text_calls == 1 and enc.text_cache_misses == 2
    np.testing.assert_array_equal(a[0], a[2])
    np.testing.assert_allclose(a[0], np.array([1, 0, 0, 1]) / np.sqrt(2), atol=1e-6)
    b = enc.encode_text(["something"])
    assert enc.text_calls == 1 and enc.text_cache_hits == 1  # served from the cache
    np.testing.assert_array_equal(b[0], a[1])
    enc.encode_text(["third"])  # evicts the least recently used ("a red chair")
    enc.encode_text(["something"])
    assert enc.text_calls == 2
    enc.encode_text(["a red chair"])
    assert enc.text_calls == 3
    assert enc.encode_text([]).shape == (0, 4)


def test_label_guesser():
    class SemanticColors(MeanColorEncoder):
        semantic = True

    enc = SemanticColors()
    guesser = LabelGuesser(enc, ["red", "green", "blue", "white"])
    red = MeanColorEncoder.expected(np.full((4, 4, 3), (250, 5, 5), np.uint8))
    label, score = guesser(red)
    assert label == "red" and 0.5 < score <= 1.0
    calls = enc.text_calls
    guesser(red)
    assert enc.text_calls == calls  # vocabulary embeddings are kept
    assert [g[0] for g in guesser.guess_batch(np.stack([red, red]))] == ["red", "red"]
    assert guesser(None) == ("", 0.0)
    # not semantic: never a label
    plain = LabelGuesser(MeanColorEncoder(), ["red"])
    assert plain(red) == ("", 0.0) and plain.text_embeddings is None
    assert LabelGuesser(None)(red) == ("", 0.0)
    assert len(DEFAULT_VOCABULARY) == 200 and len(set(DEFAULT_VOCABULARY)) == 200
    assert LabelGuesser(SemanticColors()).vocabulary[:3] == ["wall", "chair", "floor"]


# ---------------------------------------------------------------------------- open_clip

TEST_MODEL = "ViT-S-32"  # smallest built-in architecture: ~0.5 s to build on a CPU


@pytest.fixture(scope="module")
def clip_checkpoints(tmp_path_factory):
    torch = pytest.importorskip("torch")
    open_clip = pytest.importorskip("open_clip")
    torch.manual_seed(0)
    model = open_clip.create_model(TEST_MODEL, pretrained=None)
    d = tmp_path_factory.mktemp("clip")
    random_path = d / "random.pt"
    torch.save(model.state_dict(), random_path)
    with torch.no_grad():
        model.logit_scale.fill_(np.log(100.0))  # what a trained CLIP's temperature looks like
    trained_path = d / "trained_like.pt"
    torch.save({"state_dict": model.state_dict()}, trained_path)
    return random_path, trained_path


@pytest.fixture(scope="module")
def clip_encoder(clip_checkpoints):
    cfg = EmbedConfig(name="open_clip", model=TEST_MODEL, checkpoint=str(clip_checkpoints[0]), device="cpu", batch_size=8)
    return make_encoder(cfg)


def test_open_clip_loads_checkpoint_and_encodes(clip_encoder, clip_checkpoints):
    import torch

    enc = clip_encoder
    assert enc.name == "open_clip" and enc.dim == 384 and enc.input_hw == (224, 224)
    assert enc.semantic is False  # random weights are recognised as untrained
    saved = torch.load(clip_checkpoints[0], map_location="cpu", weights_only=True)
    assert torch.equal(enc.model.state_dict()["visual.proj"], saved["visual.proj"])

    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 255, (int(rng.integers(1, 300)), int(rng.integers(1, 300)), 3), dtype=np.uint8) for _ in range(10)]
    calls = enc.image_calls
    a = enc.encode_images(crops)
    assert enc.image_calls - calls == 2  # chunked by batch_size=8
    assert a.shape == (10, 384) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    b = enc.encode_images(crops)
    np.testing.assert_allclose(a, b, atol=1e-6)  # deterministic (eval mode)

    calls = enc.text_calls
    t = enc.encode_text(["a chair", "a table", "a chair"])
    assert t.shape == (3, 384) and enc.text_calls == calls + 1
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-5)
    t2 = enc.encode_text(["a table", "a chair"])
    assert enc.text_calls == calls + 1  # cache hits do not call the model
    np.testing.assert_array_equal(t2[0], t[1])


def test_open_clip_preprocessing(clip_encoder):
    import open_clip

    enc = clip_encoder
    crop = np.full((10, 40, 3), (200, 100, 50), np.uint8)
    x = enc.preprocess([crop]).numpy()
    assert x.shape == (1, 3, 224, 224)
    mean, std = np.array(open_clip.OPENAI_DATASET_MEAN), np.array(open_clip.OPENAI_DATASET_STD)
    np.testing.assert_allclose(x[0, :, 112, 112], (np.array([200, 100, 50]) / 255 - mean) / std, atol=1e-4)
    # "pad" letterboxes: 10x40 -> 56x224 band in the middle, black above and below
    np.testing.assert_allclose(x[0, :, 5, 112], (0 - mean) / std, atol=1e-4)
    from core3d_ros.core.embed.clip import resize_crop

    assert resize_crop(crop, (224, 224), "squash").shape == (224, 224, 3)
    cc = resize_crop(crop, (224, 224), "center_crop")
    assert cc.shape == (224, 224, 3) and (cc == (200, 100, 50)).all()
    padded = resize_crop(crop, (224, 224), "pad")
    assert (padded[:80] == 0).all() and (padded[84:140] == (200, 100, 50)).all()


def test_open_clip_semantic_flag_for_trained_like_weights(clip_checkpoints):
    cfg = EmbedConfig(name="open_clip", model=TEST_MODEL, checkpoint=str(clip_checkpoints[1]), device="cpu")
    enc = make_encoder(cfg)
    assert enc.semantic is True and "checkpoint" in enc.weights


def test_open_clip_clear_errors(tmp_path, clip_checkpoints, monkeypatch):
    with pytest.raises(EncoderError, match="embed.checkpoint"):
        make_encoder(EmbedConfig(name="open_clip", model=TEST_MODEL, checkpoint=str(tmp_path / "missing.pt")))
    with pytest.raises(EncoderError, match="embed.checkpoint.*embed.pretrained"):
        make_encoder(EmbedConfig(name="open_clip", model=TEST_MODEL))  # no weights at all
    with pytest.raises(EncoderError, match="not a known tag|neither an open_clip tag"):
        make_encoder(EmbedConfig(name="open_clip", model="ViT-B-16", pretrained="no_such_tag"))
    with pytest.raises(EncoderError, match="embed.model"):
        make_encoder(EmbedConfig(name="open_clip", model="NoSuchNet", checkpoint=str(clip_checkpoints[0])))
    with pytest.raises(EncoderError, match="does not fit"):
        make_encoder(EmbedConfig(name="open_clip", model="ViT-S-16", checkpoint=str(clip_checkpoints[0]), device="cpu"))
    with pytest.raises(EncoderError, match="resize_mode"):
        make_encoder(EmbedConfig(name="open_clip", model=TEST_MODEL, checkpoint=str(clip_checkpoints[0]), resize_mode="x"))

    # A known tag whose download fails (no internet): the error says what to set instead.
    import open_clip

    def no_network(*args, **kwargs):
        raise RuntimeError("Failed to download weights for tag 'laion2b_s34b_b88k': connection refused")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", no_network)
    with pytest.raises(EncoderError, match="embed.checkpoint to its local path"):
        make_encoder(EmbedConfig(name="open_clip", model="ViT-B-16", pretrained="laion2b_s34b_b88k", device="cpu"))


def test_open_clip_random_weights_only_on_request():
    enc = make_encoder(EmbedConfig(name="open_clip", model=TEST_MODEL, allow_random_weights=True, device="cpu"))
    assert enc.semantic is False and enc.weights.startswith("random")
    assert LabelGuesser(enc, ["chair"])(np.ones(enc.dim, np.float32)) == ("", 0.0)
