"""Semantic-SAM (``segmenter.name: semantic_sam``): automatic masks at chosen granularity levels.

Semantic-SAM (Li et al. 2023, github.com/UX-Decoder/Semantic-SAM) answers a point prompt with
masks at six granularity levels: levels 1-2 are semantic (stuff, whole groups), 3 instances,
4-6 parts, from coarse to fine. CORE-3D runs its automatic generator level by level and merges
the results progressively. This adapter builds one ``SemanticSamAutomaticMaskGenerator`` per
level in ``segmenter.granularity_levels`` (sharing one model) and tags every mask with
``Mask2D.level = g - 1`` (level 1 -> 0, the coarsest).

Semantic-SAM is not on PyPI and this module imports it only when the segmenter is built; see
docs/semantic_sam.md for the installation on a robot. Parameters: ``segmenter.checkpoint``
(``swinl_only_sam_many2many.pth`` or ``swint_only_sam_many2many.pth``), ``segmenter.model_type``
(``L`` or ``T``, matching the checkpoint), ``segmenter.semantic_sam_root`` (the clone; its
``configs/`` and top-level ``utils``/``tasks``/``ops`` modules are used), ``points_per_side``,
``points_per_batch``, ``pred_iou_thresh``, ``stability_score_thresh``, ``min_mask_region_area``,
``input_short_edge`` (the demos feed images with a 640-pixel short side; masks are resized back to
the frame), ``device`` (CUDA in practice: its deformable-attention op is a CUDA extension).

Building never touches the network: the configs' ImageNet backbone download is switched off
(``offline_backbone``); the checkpoint provides those weights.

Cost: each level's generator runs the backbone again, so K levels cost about K times one pass.
Upstream's generator also accepts several levels at once (one pass), but its records then no
longer say which level produced a mask, which the progressive merge needs.
"""
from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path

import cv2
import numpy as np

from ...config import SegmenterConfig
from ..frame import Frame
from .base import Mask2D, register_segmenter
from .sam import SegmenterError, check_checkpoint, generator_options, records_to_masks, resolve_device

log = logging.getLogger(__name__)

SEMANTIC_SAM_CONFIGS = {
    "L": "configs/semantic_sam_only_sa-1b_swinL.yaml",
    "T": "configs/semantic_sam_only_sa-1b_swinT.yaml",
}
SEMANTIC_SAM_CHECKPOINTS = {"L": "swinl_only_sam_many2many.pth", "T": "swint_only_sam_many2many.pth"}
LEVELS = (1, 2, 3, 4, 5, 6)

INSTALL_HINT = (
    "Semantic-SAM is not on PyPI: clone https://github.com/UX-Decoder/Semantic-SAM, install its "
    "requirements and detectron2 (see docs/semantic_sam.md), then set segmenter.semantic_sam_root "
    "to the clone (or put the clone on PYTHONPATH)"
)


def check_levels(levels) -> list[int]:
    out = sorted({int(v) for v in levels})
    if not out or any(v not in LEVELS for v in out):
        raise SegmenterError(f"segmenter.granularity_levels must be values in {list(LEVELS)}, got {list(levels)}")
    return out


def _import_semantic_sam(root: str):
    """Import the Semantic-SAM modules; returns (root path, modules namespace)."""
    if root:
        root_path = Path(root).expanduser().resolve()
        if not (root_path / "semantic_sam").is_dir():
            raise SegmenterError(f"segmenter.semantic_sam_root={root!r} is not a Semantic-SAM clone (no semantic_sam/ folder)")
        if str(root_path) not in sys.path:
            sys.path.insert(0, str(root_path))
    try:
        import semantic_sam
        from semantic_sam import SemanticSamAutomaticMaskGenerator, build_model
        from semantic_sam.BaseModel import BaseModel
        from utils.arguments import load_opt_from_config_file
    except ImportError as e:
        raise SegmenterError(f"segmenter.name=semantic_sam cannot import Semantic-SAM ({e}). {INSTALL_HINT}") from e
    if not root:
        root_path = Path(semantic_sam.__file__).resolve().parent.parent
    return root_path, {
        "SemanticSamAutomaticMaskGenerator": SemanticSamAutomaticMaskGenerator,
        "build_model": build_model,
        "BaseModel": BaseModel,
        "load_opt_from_config_file": load_opt_from_config_file,
    }


def load_semantic_sam(cfg: SegmenterConfig):
    """Build the model the way ``semantic_sam.build_semantic_sam`` does, with an absolute config
    path and the configured device (upstream hard-codes a relative path and ``.cuda()``)."""
    model_type = cfg.model_type.strip().upper()
    if model_type not in SEMANTIC_SAM_CONFIGS:
        raise SegmenterError(
            f"segmenter.model_type={cfg.model_type!r} is not a Semantic-SAM model; use 'L' (Swin-L) or 'T' (Swin-T)"
        )
    ckpt = check_checkpoint(cfg.checkpoint, f"a Semantic-SAM {model_type} checkpoint such as {SEMANTIC_SAM_CHECKPOINTS[model_type]}")
    device = resolve_device(cfg.device)
    if device.type != "cuda":
        log.warning("Semantic-SAM on %s: its deformable attention needs the CUDA extension; expect failure or slowness", device)
    root, mod = _import_semantic_sam(cfg.semantic_sam_root)
    conf = root / SEMANTIC_SAM_CONFIGS[model_type]
    if not conf.is_file():
        raise SegmenterError(f"Semantic-SAM config {str(conf)!r} not found; set segmenter.semantic_sam_root to the clone")
    opt = mod["load_opt_from_config_file"](str(conf))
    offline_backbone(opt)
    model = mod["BaseModel"](opt, mod["build_model"](opt)).from_pretrained(str(ckpt)).eval().to(device)
    return model, mod["SemanticSamAutomaticMaskGenerator"]


def offline_backbone(opt: dict) -> None:
    """Never fetch a backbone while building the model.

    Both upstream configs set ``MODEL.BACKBONE.LOAD_PRETRAINED: true`` with an ImageNet Swin URL
    that the backbone downloads at construction; the Semantic-SAM checkpoint loaded right after
    holds every backbone weight anyway, so the download is useless and fails without network.
    """
    backbone = opt.setdefault("MODEL", {}).setdefault("BACKBONE", {})
    backbone["LOAD_PRETRAINED"] = False
    backbone["PRETRAINED"] = ""


def build_generators(cfg: SegmenterConfig) -> dict[int, object]:
    levels = check_levels(cfg.granularity_levels)
    model, generator_cls = load_semantic_sam(cfg)
    return {
        g: generator_cls(model, **generator_options(cfg), level=[g])
        for g in levels
    }


class SemanticSamSegmenter:
    """``segment(frame)`` -> masks of every configured level, ``Mask2D.level = g - 1``.

    ``generators`` ({level: generator}) replaces the model-backed generators (tests, custom
    set-ups); each must offer ``generate(image) -> list[record]`` taking a (3, H, W) uint8 torch
    tensor on ``device``, as Semantic-SAM's generator does.
    """

    name = "semantic_sam"

    def __init__(self, cfg: SegmenterConfig, generators: dict[int, object] | None = None):
        self.cfg = cfg
        if generators is None:
            generators = build_generators(cfg)
            self.device = resolve_device(cfg.device)
        else:
            check_levels(generators.keys())
            self.device = resolve_device(cfg.device) if cfg.device != "auto" else None
        self.generators = dict(sorted(generators.items()))

    def _input(self, rgb: np.ndarray):
        import torch

        h, w = rgb.shape[:2]
        short = self.cfg.input_short_edge
        if short > 0 and min(h, w) != short:
            s = short / min(h, w)
            size = (max(1, round(w * s)), max(1, round(h * s)))
            rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_CUBIC if s > 1 else cv2.INTER_AREA)
        t = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)
        return t.to(self.device) if self.device is not None else t

    def segment(self, frame: Frame) -> list[Mask2D]:
        import torch

        image = self._input(frame.rgb)
        on_cuda = image.device.type == "cuda"
        autocast = torch.autocast("cuda", dtype=torch.float16) if on_cuda else contextlib.nullcontext()
        masks: list[Mask2D] = []
        with torch.no_grad(), autocast:
            for g, generator in self.generators.items():
                records = generator.generate(image)
                masks.extend(records_to_masks(records, shape=frame.rgb.shape[:2], level=g - 1))
        return masks


@register_segmenter("semantic_sam")
def _make_semantic_sam(cfg: SegmenterConfig) -> SemanticSamSegmenter:
    return SemanticSamSegmenter(cfg)
