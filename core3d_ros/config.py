"""One typed configuration tree for core3d.

Every tunable number lives here with its default. The tree loads from YAML (either a plain
nested mapping, or a ROS 2 parameters file ``<node>: ros__parameters: {...}``), and flattens to
dotted names (``fusion.voxel_size``) that map one to one onto ROS parameters.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class DepthConfig:
    depth_scale: float = 1000.0  # raw integer depth units per metre (16UC1 millimetres)
    min_depth: float = 0.1  # metres; closer readings are invalid
    max_depth: float = 5.0  # metres; farther readings are invalid


@dataclass
class FusionConfig:
    voxel_size: float = 0.025  # metres (2-5 cm is sensible for rooms)
    # Back-project every n-th pixel (1: full resolution); 0 = auto: the largest stride that
    # still puts a sample in every voxel of a surface at the frame's far depth.
    pixel_stride: int = 1
    slots_per_voxel: int = 4  # object instances remembered per voxel
    # Association / merging test of CORE-3D: IoV(a,b) > gamma, IoV(b,a) > gamma, |diff| < delta.
    # With gamma = 0.5 both IoVs lie in (0.5, 1], so a delta >= 0.5 could never reject a pair;
    # 0.3 lets the balance test act (neutral on the oracle eval, +0.015 objects-only mean IoU
    # for the geometric segmenter; see README "Ablation").
    gamma: float = 0.5
    delta: float = 0.3
    merge_interval: int = 10  # frames between map-wide merge passes
    # A segment unites objects that each fill this share of it; 0 disables. Helps segmenters
    # with consistent masks, hurts inconsistent ones (see the eval figures in README).
    union_min_share: float = 0.0
    # DBSCAN split of each mask in 3D (eps in voxel units; 1.75 = the 26-neighbourhood).
    dbscan_eps_voxels: float = 1.75
    dbscan_min_samples: int = 3
    min_segment_voxels: int = 15  # smaller 3D segments are ignored as noise
    min_object_observations: int = 2  # objects seen fewer times are not reported
    max_voxels: int = 4_000_000  # hard memory bound; new voxels beyond it are dropped (counted)
    device: str = "cpu"  # where the block hash lives: cpu | cuda | cuda:N (open3d.core device)
    # Association: the segment side of IoV counts only the segment's voxels the map has seen
    # before (new space is neutral), so a view that extends an object finds it.
    iov_known_only: bool = True
    # Objects seen inside one mask in this many frames (and more often than in different masks
    # of one frame) are merged: pieces of one object the map holds apart. 0 disables.
    co_mask_votes: int = 1
    dbscan_split: bool = True  # split each mask in 3-D by DBSCAN (off: one segment per mask)
    min_valid_pixels: int = 100  # frames with fewer valid depth pixels are refused (counted)
    # A camera that moved further than this (metres) since the previous frame is refused once
    # (a tracking jump); the next frame from the new place is accepted. 0 disables.
    max_pose_jump: float = 10.0


@dataclass
class GeometricSegmenterConfig:
    """Weight-free segmenter: remove dominant planes, cluster the rest in 3D, coarse to fine.

    Distance thresholds grow with depth z (metres): ``value * z + depth_noise * z**2`` for the
    region thresholds, ``plane_distance + depth_noise * z**2`` for plane inliers.
    """

    pixel_stride: int = 2  # work on every n-th pixel; masks come back at full resolution
    normal_radius: int = 2  # grid pixels either side for the normals' central differences
    depth_noise: float = 0.003  # metres per squared metre of depth (Kinect-like quantisation)
    plane_distance: float = 0.02  # metres, RANSAC inlier threshold (plus the depth noise term)
    plane_normal_deg: float = 20.0  # an inlier's normal lies within this angle of the plane's
    plane_min_fraction: float = 0.08  # a plane must cover this share of valid pixels
    max_planes: int = 4
    ransac_iterations: int = 64  # plane hypotheses (point + normal) tried per plane
    # Per granularity level, coarse to fine (same length): a depth step larger than
    # cluster_eps * z separates regions; so does a concave crease sharper than concave_deg.
    cluster_eps: list[float] = field(default_factory=lambda: [0.05, 0.025])
    concave_deg: list[float] = field(default_factory=lambda: [60.0, 30.0])
    hole_fill_px: int = 6  # invalid-depth pixels this close to a region join it (full-res pixels)
    min_mask_pixels: int = 400
    score_width_px: float = 4.0  # regions this thick (mean half-width, pixels) score 0.5 x depth coverage
    keep_planes: bool = True  # report the removed planes as masks too (floor, table top, walls)


@dataclass
class ProgressiveConfig:
    """CORE-3D progressive multi-granularity merging of masks."""

    tau_cer: float = 0.5  # keep masks with confidence above this
    tau_k: float = 0.3  # add a mask only if |m ∩ kept| / |m| is below this
    min_mask_pixels: int = 200


@dataclass
class SegmenterConfig:
    name: str = "geometric"  # geometric | oracle | sam | semantic_sam
    checkpoint: str = ""  # model weights for sam / semantic_sam
    model_type: str = "vit_b"  # sam: vit_b | vit_l | vit_h ; semantic_sam: L | T
    granularity_levels: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5, 6])
    points_per_side: int = 32
    device: str = "auto"
    # sam / semantic_sam automatic generators: their own quality filters, applied before the
    # progressive merge (which then keeps score > progressive.tau_cer).
    points_per_batch: int = 64  # point prompts decoded together (GPU memory vs speed)
    # Drop masks whose predicted IoU is at or below this. 0 (default): no generator-side filter,
    # so that progressive.tau_cer is the one confidence threshold, as in CORE-3D (with the SAM
    # authors' 0.88 here, tau_cer at 0.5 could never remove a mask).
    pred_iou_thresh: float = 0.0
    stability_score_thresh: float = 0.92  # drop masks less stable than this
    min_mask_region_area: int = 0  # >0: remove islands/holes smaller than this (pixels)
    input_short_edge: int = 640  # semantic_sam: resize the shorter image side to this; 0 keeps size
    semantic_sam_root: str = ""  # Semantic-SAM clone (put on sys.path); empty: the importable package's
    geometric: GeometricSegmenterConfig = field(default_factory=GeometricSegmenterConfig)
    progressive: ProgressiveConfig = field(default_factory=ProgressiveConfig)


@dataclass
class EmbedConfig:
    name: str = "none"  # none | open_clip | mean_color (deterministic test encoder, not semantic)
    model: str = "ViT-B-16"
    pretrained: str = ""  # open_clip pretrained tag (downloads on a machine with internet)
    checkpoint: str = ""  # local checkpoint path; takes precedence over `pretrained`
    device: str = "auto"  # auto | cpu | cuda
    batch_size: int = 64
    # Context-aware crop fusion (CORE-3D): e = sum(w * e_crop) - w_sur * e_sur.
    w_mask: float = 0.45
    w_bbox: float = 0.25
    w_large: float = 0.15
    w_huge: float = 0.15
    w_sur: float = 0.1
    large_scale: float = 2.5
    huge_scale: float = 4.0
    sur_scale: float = 3.0
    alpha_global: float = 0.0  # OpenInsGaussian global-context blend; 0 disables
    crop_size: int = 224
    resize_mode: str = "pad"  # crop -> model input: pad (letterbox) | squash | center_crop
    half_precision: bool = True  # fp16 weights and inputs on CUDA (CPU always runs fp32)
    text_cache_size: int = 1024  # text embeddings remembered (LRU)
    allow_random_weights: bool = False  # open_clip without weights (timing only; never semantic)


@dataclass
class KeyframeConfig:
    enabled: bool = True  # false: every frame is a keyframe
    min_translation: float = 0.10  # metres
    min_rotation_deg: float = 10.0
    max_interval: int = 10  # frames


@dataclass
class RetrievalConfig:
    top_k: int = 5
    max_query_chars: int = 256
    vocabulary: list[str] = field(default_factory=list)  # empty: the built-in ScanNet-200-style list
    up_axis: list[float] = field(default_factory=lambda: [0.0, 0.0, 1.0])  # world up (z-up maps)
    # Semantic scoring: S = exp((cos - best cos) / temperature), the softmax normalised by its max.
    text_template: str = "a photo of a {}"  # prompt for the text encoder; {} is the noun phrase
    temperature: float = 0.02
    label_bonus: float = 0.02  # cosine bonus when an object's label equals the noun (semantic only)
    color_weight: float = 0.5  # noun matched by text: colour factor (1 - w) + w * match; else match
    relation_floor: float = 0.05  # relation factor floor + (1 - floor) * R; R = 0 keeps this share
    superlative_gate: float = 0.5  # superlatives rank objects scoring at least gate x the best
    superlative_floor: float = 0.1  # multiplier of the least extreme eligible object
    target_candidates: int = 64  # top-M targets (by similarity) checked for relations
    anchor_candidates: int = 16  # top-M anchors per anchor phrase
    local_anchor_radius: float = 3.0  # metres: also check good anchors this close to a candidate
    local_anchor_gate: float = 0.5  # "good": anchor score >= gate x the best anchor's
    max_geometric_targets: int = 20000  # without a target noun: objects scored geometrically
    # Spatial relations (metres).
    near_distance: float = 0.5  # gap between boxes at which "near" scores 0.5
    near_softness: float = 0.1  # logistic width of that threshold
    contact_tolerance: float = 0.05  # "on": bottom of target vs top of anchor
    footprint_margin: float = 0.03  # soft margin of footprint / box containment
    lateral_range: float = 2.0  # left/right/in front/behind fade beyond this distance
    between_tolerance: float = 0.3  # minimum off-line tolerance of "between"


@dataclass
class RosConfig:
    color_topic: str = "camera/color/image_raw"
    depth_topic: str = "camera/depth/image_raw"
    info_topic: str = "camera/color/camera_info"
    pose_topic: str = "camera/pose"
    # Optional per-pixel instance ids (32SC1/16UC1, 0 = none) from a simulator, for the oracle
    # segmenter; empty: not subscribed.
    instance_topic: str = ""
    pose_type: str = "pose"  # pose (PoseStamped) | odometry | tf
    map_frame: str = "map"
    camera_frame: str = ""  # for pose_type=tf; empty: the image header's frame_id
    qos_reliability: str = "best_effort"  # best_effort | reliable
    qos_depth: int = 10
    sync_slop: float = 0.05  # seconds
    sync_queue: int = 30
    max_pose_age: float = 0.2  # seconds between image stamp and nearest pose
    work_queue: int = 4  # bounded queue between callbacks and the mapping worker
    publish_period: float = 1.0  # seconds between map publications
    publish_points: bool = True
    marker_style: str = "line_list"  # object boxes in core3d/markers: line_list (wire frame) | cube
    map_path: str = ""  # load this map at start-up when set


@dataclass
class MapperConfig:
    depth: DepthConfig = field(default_factory=DepthConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    keyframes: KeyframeConfig = field(default_factory=KeyframeConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    ros: RosConfig = field(default_factory=RosConfig)


class ConfigError(ValueError):
    """A configuration value is unknown or has the wrong type."""


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, hint: Any, name: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a mapping, got {type(value).__name__}")
        return _from_dict(hint, value, name)
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}: expected a list, got {type(value).__name__}")
        return [_coerce(v, item, f"{name}[]") for v in value]
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true/false, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected a string, got {value!r}")
        return value
    return value


def _from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = _hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - known
    if unknown:
        where = prefix or "config"
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _coerce(value, hints[key], f"{prefix}.{key}" if prefix else key)
    return cls(**kwargs)


def from_dict(data: dict[str, Any]) -> MapperConfig:
    """Build a MapperConfig from a nested mapping; missing keys keep their defaults."""
    return _from_dict(MapperConfig, data or {})


def load_config(path: str | Path | None) -> MapperConfig:
    """Load YAML: a nested mapping, or a ROS 2 parameters file (first node's ros__parameters)."""
    if path is None:
        return MapperConfig()
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    for value in data.values():  # ROS parameters layout
        if isinstance(value, dict) and "ros__parameters" in value:
            data = value["ros__parameters"] or {}
            break
    return from_dict(data)


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted-name view of a config tree: {'fusion.voxel_size': 0.025, ...}."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        name = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """Inverse of flatten for plain values: {'a.b': 1} -> {'a': {'b': 1}}."""
    root: dict[str, Any] = {}
    for dotted, value in flat.items():
        node = root
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return root


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
