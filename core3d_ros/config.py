"""One typed configuration tree for core3d.

Every tunable number lives here with its default. The tree loads from YAML (either a plain
nested mapping, or a ROS 2 parameters file ``<node>: ros__parameters: {...}``), and flattens to
dotted names (``fusion.voxel_size``) that map one to one onto ROS parameters.

``validate`` is the one check of values: each field's range or allowed values (declared with the
field) and the rules between fields. Loading runs it, and so do the nodes on their parameters,
so a bad value fails at start-up in one line naming the parameter, in the same words everywhere.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

INF = float("inf")
INT_MAX = 2**31 - 1


def _p(
    default: Any,
    description: str,
    value_range: tuple[Any, Any] | None = None,
    *,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """A config field with its ROS parameter description, and its range (inclusive) or the
    values it may take, as metadata.

    ``validate`` enforces range and choices; ``ros2 param describe`` shows them (the nodes
    declare them in their ParameterDescriptors). List defaults are copied per instance.
    """
    meta: dict[str, Any] = {"description": description}
    if value_range is not None:
        meta["range"] = value_range
    if choices is not None:
        meta["choices"] = tuple(choices)
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def describe(cfg_cls: type, dotted: str) -> dict[str, Any]:
    """Metadata (description, range, choices) of the field at dotted name ``dotted`` under ``cfg_cls``."""
    cls = cfg_cls
    *parents, leaf = dotted.split(".")
    hints_cls = cls
    for name in parents:
        hints_cls = typing.get_type_hints(hints_cls)[name]
    f = next(f for f in dataclasses.fields(hints_cls) if f.name == leaf)
    return dict(f.metadata)


@dataclass
class DepthConfig:
    depth_scale: float = _p(1000.0, "raw integer depth units per metre (16UC1 millimetres)", (0.0, INF))
    min_depth: float = _p(0.1, "metres; closer readings are invalid", (0.0, INF))
    max_depth: float = _p(5.0, "metres; farther readings are invalid", (0.0, INF))


@dataclass
class FusionConfig:
    voxel_size: float = _p(0.025, "metres (2-5 cm is sensible for rooms)", (0.0001, 10.0))
    # Back-project every n-th pixel (1: full resolution); 0 = auto: the largest stride that
    # still puts a sample in every voxel of a surface at the frame's far depth.
    pixel_stride: int = _p(1, "back-project every n-th pixel (1: full resolution); 0 = auto (largest stride that keeps 3-D segments connected)", (0, 64))
    slots_per_voxel: int = _p(4, "object instances remembered per voxel", (1, 64))
    # Association / merging test of CORE-3D: IoV(a,b) > gamma, IoV(b,a) > gamma, |diff| < delta.
    # With gamma = 0.5 both IoVs lie in (0.5, 1], so a delta >= 0.5 could never reject a pair;
    # 0.3 lets the balance test act (neutral on the oracle eval; on the geometric segmenter
    # between -0.04 and +0.002 all-instance mean IoU over seeds 0-3; see README "Ablation").
    gamma: float = _p(0.5, "association/merge test: both IoVs must exceed this", (0.0, 1.0))
    delta: float = _p(0.3, "association/merge test: the IoVs may differ by less than this (below 1 - gamma to act)", (0.0, 1.0))
    merge_interval: int = _p(10, "frames between map-wide merge passes; 0 disables them", (0, INT_MAX))
    # A segment unites objects that each fill this share of it; 0 disables. Helps segmenters
    # with consistent masks, hurts inconsistent ones (see the eval figures in README).
    union_min_share: float = _p(0.0, "a segment unites objects that each fill this share of it; 0 disables", (0.0, 1.0))
    # DBSCAN split of each mask in 3D (eps in voxel units; 1.75 = the 26-neighbourhood).
    dbscan_eps_voxels: float = _p(1.75, "DBSCAN eps of the 3-D split of each mask, in voxel units (1.75 = 26-neighbourhood)", (0.0, INF))
    dbscan_min_samples: int = _p(3, "DBSCAN min_samples of the 3-D split of each mask", (1, INT_MAX))
    min_segment_voxels: int = _p(15, "smaller 3D segments are ignored as noise", (0, INT_MAX))
    min_object_observations: int = _p(2, "objects seen fewer times are not reported", (1, INT_MAX))
    max_voxels: int = _p(4_000_000, "hard memory bound; new voxels beyond it are dropped (counted)", (1, INT_MAX))
    best_view_budget_mb: float = _p(256.0, "most megabytes of objects' best views kept in the map; beyond it the views of the objects seen longest ago are dropped (counted; such an object takes its next view)", (0.0, INF))
    device: str = _p("cpu", "where the block hash lives: cpu | cuda | cuda:N (open3d.core device)")
    threads: int = _p(0, "CPU threads of the per-pixel fusion stage (back-projection, voxel deduplication); 0: the cores this process may use, at most 4", (0, 64))
    # Association: the segment side of IoV counts only the segment's voxels the map has seen
    # before (new space is neutral), so a view that extends an object finds it.
    iov_known_only: bool = _p(True, "association: the segment side of IoV counts only voxels the map has seen before")
    # Objects seen inside one mask in this many frames (and more often than in different masks
    # of one frame) are merged: pieces of one object the map holds apart. 0 disables.
    co_mask_votes: int = _p(1, "objects seen inside one mask in this many frames (more often than apart) are merged; 0 disables", (0, INT_MAX))
    # A segment that would found a new object but lies within this many voxels of an object the
    # frame does not see (and both pass the balanced test on the share of each lying next to the
    # other) is that object's other face: the back of a thin screen, a door or a shelf seen from
    # behind, never in one view with its front. 0 disables.
    hidden_side_voxels: int = _p(2, "a new segment within this many voxels of an object the frame does not see, each mostly next to the other, joins it (the other face of a thin thing); 0 disables", (0, 8))
    dbscan_split: bool = _p(True, "split each mask in 3-D by DBSCAN (off: one segment per mask)")
    min_valid_pixels: int = _p(100, "frames with fewer valid depth pixels are refused (counted)", (0, INT_MAX))
    # A camera that moved further than this (metres) since the previous frame is refused once
    # (a tracking jump); the next frame from the new place is accepted. 0 disables.
    max_pose_jump: float = _p(10.0, "metres: a camera that jumped further since the previous frame is refused once; 0 disables", (0.0, INF))
    # Free-space evidence (core/fusion/free_space.py): a voxel whose whole image footprint has
    # valid depth beyond it by more than max(free_margin_voxels voxels, free_margin_quadratic * z^2)
    # was seen through; seen through often enough (relative to its hits), it is cleared, and an
    # object that lost free_object_fraction of its voxels so is removed.
    free_space: bool = _p(True, "clear voxels that depth frames see through, and objects that lose most of their voxels so (off: the map only grows)")
    free_interval: int = _p(2, "free space: look for evidence in every n-th fused depth frame (1: every frame; each look costs about 1 ms at 640x480)", (1, INT_MAX))
    free_margin_voxels: float = _p(2.0, "free space: depth must lie beyond a voxel by at least this many voxels", (0.0, INF))
    free_margin_quadratic: float = _p(0.005, "free space: ... and by at least this times depth^2 (metres per squared metre, the depth noise)", (0.0, INF))
    free_min_observations: int = _p(3, "free space: frames that must see through a voxel (since it was last seen occupied) before it is cleared", (1, INT_MAX))
    free_ratio: float = _p(0.5, "free space: ... and at least this many per hit of the voxel (hits counted up to free_hits_cap; a look counts for free_interval frames)", (0.0, INF))
    free_hits_cap: int = _p(10, "free space: hits beyond this do not make a voxel harder to clear", (0, INT_MAX))
    free_object_fraction: float = _p(0.5, "free space: an object whose cleared voxels reach this share of those it had is removed whole", (0.0, 1.0))
    # Pose corrections (core/mapping/corrections.py, core/fusion/corrections.py): the fused
    # frames' poses are kept (136 bytes each) so that corrected keyframe poses from SLAM can
    # move the objects those frames anchored.
    correction_anchor: str = _p("voxel", "pose corrections: what follows a corrected frame: the voxels it created (voxel, 8 bytes per voxel) or the objects it saw most of, rigidly (object)", choices=("voxel", "object"))
    correction_depth_mb: int = _p(256, "pose corrections (voxel grain): MiB of recent fused depth images kept, so that a correction re-projects a frame's own pixels (exact) instead of moving voxel centres (up to a voxel off); 0: never", (0, INT_MAX))
    correction_copies: bool = _p(True, "pose corrections (voxel grain): a corrected frame's kept pixels that fell in voxels another frame created also mark their corrected voxels (the drift had folded them onto that frame's voxels)")
    correction_frames: int = _p(20000, "pose corrections: fused frames whose poses are kept (136 bytes each); older ones can no longer be corrected", (1, INT_MAX))
    correction_stamp_tolerance: float = _p(0.005, "pose corrections: seconds between a correction's stamp and the fused frame it corrects", (0.0, INF))
    correction_max_gap: float = _p(1.0, "pose corrections: fused frames within this many seconds of a corrected keyframe follow its correction", (0.0, INF))
    # Moves (core/fusion/moves.py): an object removed by free space and an alike object new
    # elsewhere within move_window seconds are one object that moved (ObjectInfo.moved_from).
    move_window: float = _p(120.0, "moves: seconds between an object's removal and an alike object's appearance elsewhere for it to count as moved (0: off)", (0.0, INF))
    move_min_cosine: float = _p(0.85, "moves: embeddings at least this similar (cosine) are alike", (-1.0, 1.0))
    move_max_color_distance: float = _p(0.12, "moves, without embeddings: mean colours (RGB in [0, 1]) at most this far apart are alike ...", (0.0, 2.0))
    move_size_ratio: float = _p(1.5, "moves, without embeddings: ... and sizes (voxels, each box side) within this factor", (1.0, INF))
    move_min_distance: float = _p(0.2, "moves: metres between the old and the new centroid at least (nearer is the same place seen again)", (0.0, INF))


@dataclass
class GeometryConfig:
    """The TSDF surface map every frame is integrated into (same voxel size as the object map)."""

    enabled: bool = _p(True, "integrate every synced frame into the TSDF surface map (Open3D VoxelBlockGrid)")
    device: str = _p("cpu", "auto | cpu | cuda[:N]: Open3D's device for the TSDF")
    block_count: int = _p(1000, "8^3-voxel blocks reserved at start; the hash map grows as needed", (1, INT_MAX))
    trunc_voxels: float = _p(4.0, "TSDF truncation distance, in voxels", (1.0, 64.0))
    min_weight: float = _p(2.0, "observations before a surface voxel is published", (0.0, INF))
    clear: bool = _p(True, "integrate every allocated block the frame's rays pass, not only those near its surface, so a surface that left fades (as nvblox)")
    max_weight: float = _p(20.0, "cap on a TSDF voxel's weight (0: none): a surface that left clears within about this many frames however long it was seen", (0.0, INF))
    carve: bool = _p(True, "with clear: a voxel held on or behind a surface that a frame sees through (depth beyond it by 2 voxels or more over its whole footprint) restarts from that frame's measurement, so a vanished object's inside does not linger in the surface band")
    carve_interval: int = _p(2, "carving looks in every n-th integrated frame (a look costs about 2 ms at 2.5 cm and 640x480, several times that at 1 cm)", (1, INT_MAX))


@dataclass
class GeometricSegmenterConfig:
    """Weight-free segmenter: remove dominant planes, cluster the rest in 3D, coarse to fine.

    Distance thresholds grow with depth z (metres): ``value * z + depth_noise * z**2`` for the
    region thresholds, ``plane_distance + depth_noise * z**2`` for plane inliers.
    """

    # 0 = auto: a grid at least 320 pixels wide (stride 2 for 640x480, 1 for 320x240). With a
    # fixed 2, the synthetic room's 320x240 frames were segmented on a 160x120 grid: mean IoU
    # 0.773 (seeds 1-3: 0.748 / 0.782 / 0.692); on 320x240: 0.811 (0.779 / 0.810 / 0.704).
    pixel_stride: int = _p(0, "work on every n-th pixel (0: auto, a grid at least 320 pixels wide); masks come back at full resolution", (0, 64))
    normal_radius: int = _p(2, "grid pixels either side for the normals' central differences", (1, 64))
    depth_noise: float = _p(0.003, "metres per squared metre of depth (Kinect-like quantisation)", (0.0, INF))
    plane_distance: float = _p(0.02, "metres, RANSAC inlier threshold (plus the depth noise term)", (0.0, INF))
    plane_normal_deg: float = _p(20.0, "an inlier's normal lies within this angle of the plane's", (0.0, 90.0))
    plane_min_fraction: float = _p(0.08, "a plane must cover this share of valid pixels", (0.0, 1.0))
    max_planes: int = _p(4, "dominant planes removed (and reported as masks when keep_planes)", (0, 64))
    ransac_iterations: int = _p(64, "plane hypotheses (point + normal) tried per plane", (1, INT_MAX))
    # Per granularity level, coarse to fine (same length): a depth step larger than
    # cluster_eps * z separates regions; so does a concave crease sharper than concave_deg.
    # The angle is measured between normals smoothed over their support, which reads a
    # right-angled crease as ~35 degrees: 30 cuts right angles (an object on the floor or
    # against a wall) at the coarse level, 20 also shallower folds at the fine one.
    cluster_eps: list[float] = _p([0.05, 0.025], "per granularity level, coarse to fine: a depth step larger than cluster_eps * z separates regions")
    concave_deg: list[float] = _p([30.0, 20.0], "per granularity level, coarse to fine: a concave crease sharper than this (degrees) separates regions")
    hole_fill_px: int = _p(6, "invalid-depth pixels this close to a region join it (full-res pixels)", (0, INT_MAX))
    # The same minimum as the progressive merge's (200). It also sets the smallest plane
    # component and region seed. At 400, small things far away at 320x240 lost their mask in
    # many frames: in the synthetic room (seeds 0-3) 16-37 % of each mug went to the table
    # (mug IoU 0.62-0.84; at 200: 0.86-0.90).
    min_mask_pixels: int = _p(200, "smaller masks are dropped (pixels)", (0, INT_MAX))
    score_width_px: float = _p(4.0, "regions this thick (mean half-width, pixels) score 0.5 x depth coverage", (0.0, INF))
    keep_planes: bool = _p(True, "report the removed planes as masks too (floor, table top, walls)")


@dataclass
class ProgressiveConfig:
    """CORE-3D progressive multi-granularity merging of masks."""

    tau_cer: float = _p(0.5, "keep masks with confidence above this", (0.0, 1.0))
    tau_k: float = _p(0.3, "add a mask only if |m ∩ kept| / |m| is below this", (0.0, 1.0))
    min_mask_pixels: int = _p(200, "smaller masks are dropped before the progressive merge (pixels)", (0, INT_MAX))


@dataclass
class SegmenterConfig:
    name: str = _p("geometric", "geometric | oracle | sam | semantic_sam")
    checkpoint: str = _p("", "model weights for sam / semantic_sam")
    model_type: str = _p("vit_b", "sam: vit_b | vit_l | vit_h ; semantic_sam: L | T")
    granularity_levels: list[int] = _p([1, 2, 3, 4, 5, 6], "mask generator granularity levels used (semantic_sam: 1-6)")
    points_per_side: int = _p(32, "sam / semantic_sam: point grid per image side", (1, INT_MAX))
    device: str = _p("auto", "auto | cpu | cuda")
    # sam / semantic_sam automatic generators: their own quality filters, applied before the
    # progressive merge (which then keeps score > progressive.tau_cer).
    points_per_batch: int = _p(64, "point prompts decoded together (GPU memory vs speed)", (1, INT_MAX))
    # Drop masks whose predicted IoU is at or below this. 0 (default): no generator-side filter,
    # so that progressive.tau_cer is the one confidence threshold, as in CORE-3D (with the SAM
    # authors' 0.88 here, tau_cer at 0.5 could never remove a mask).
    pred_iou_thresh: float = _p(0.0, "drop masks whose predicted IoU is at or below this; 0: progressive.tau_cer is the one confidence threshold", (0.0, 1.0))
    stability_score_thresh: float = _p(0.92, "drop masks less stable than this", (0.0, 1.0))
    min_mask_region_area: int = _p(0, ">0: remove islands/holes smaller than this (pixels)", (0, INT_MAX))
    input_short_edge: int = _p(640, "semantic_sam: resize the shorter image side to this; 0 keeps size", (0, INT_MAX))
    semantic_sam_root: str = _p("", "Semantic-SAM clone (put on sys.path); empty: the importable package's")
    geometric: GeometricSegmenterConfig = field(default_factory=GeometricSegmenterConfig)
    progressive: ProgressiveConfig = field(default_factory=ProgressiveConfig)


@dataclass
class EmbedConfig:
    name: str = _p("none", "none | open_clip | mean_color (deterministic test encoder, not semantic)")
    model: str = _p("ViT-B-16", "open_clip model name")
    pretrained: str = _p("", "open_clip pretrained tag (downloads on a machine with internet)")
    checkpoint: str = _p("", "local checkpoint path; takes precedence over `pretrained`")
    device: str = _p("auto", "auto | cpu | cuda")
    batch_size: int = _p(64, "crops per CLIP batch", (1, INT_MAX))
    # Context-aware crop fusion (CORE-3D): e = sum(w * e_crop) - w_sur * e_sur.
    w_mask: float = _p(0.45, "weight of the mask crop in the fused embedding", (0.0, INF))
    w_bbox: float = _p(0.25, "weight of the box crop", (0.0, INF))
    w_large: float = _p(0.15, "weight of the large (large_scale x box) crop", (0.0, INF))
    w_huge: float = _p(0.15, "weight of the huge (huge_scale x box) crop", (0.0, INF))
    w_sur: float = _p(0.1, "weight subtracted for the surroundings crop (object blanked)", (0.0, INF))
    large_scale: float = _p(2.5, "box scale of the large crop", (1.0, INF))
    huge_scale: float = _p(4.0, "box scale of the huge crop", (1.0, INF))
    sur_scale: float = _p(3.0, "box scale of the surroundings crop", (1.0, INF))
    alpha_global: float = _p(0.0, "OpenInsGaussian global-context blend; 0 disables", (0.0, 1.0))
    crop_size: int = _p(224, "CLIP input size (pixels)", (1, INT_MAX))
    resize_mode: str = _p("pad", "crop -> model input: pad (letterbox) | squash | center_crop", choices=("pad", "squash", "center_crop"))
    half_precision: bool = _p(True, "fp16 weights and inputs on CUDA (CPU always runs fp32)")
    text_cache_size: int = _p(1024, "text embeddings remembered (LRU)", (0, INT_MAX))
    allow_random_weights: bool = _p(False, "open_clip without weights (timing only; never semantic)")


@dataclass
class KeyframeConfig:
    enabled: bool = _p(True, "false: every frame is a keyframe")
    min_translation: float = _p(0.10, "metres the camera moves before the next keyframe", (0.0, INF))
    min_rotation_deg: float = _p(10.0, "degrees the camera turns before the next keyframe", (0.0, 360.0))
    max_interval: int = _p(10, "a keyframe at least every this many frames", (1, INT_MAX))


@dataclass
class LlmConfig:
    """Optional LLM / VLM steps of retrieval through an OpenAI-compatible chat-completions
    endpoint (vLLM, llama.cpp server, Ollama, ...). Any failed step falls back to the rule-based
    answer; see core3d_ros/core/retrieval/llm/."""

    enabled: bool = _p(False, "false: rule-based retrieval only")
    base_url: str = _p("", "e.g. http://127.0.0.1:8000/v1 (the part before /chat/completions)")
    model: str = _p("", "model name as the server knows it (parse and decide steps)")
    vlm_model: str = _p("", "model for the image steps (verify, orientation); empty: `model`")
    api_key_env: str = _p("CORE3D_LLM_API_KEY", "NAME of the environment variable holding the key (unset: no key)")
    call_timeout: float = _p(10.0, "seconds for one HTTP call", (0.001, 3600.0))
    query_budget: float = _p(20.0, "seconds for all steps of one query; later steps are skipped", (0.001, 3600.0))
    max_retries: int = _p(0, "extra attempts after a connection error, timeout or HTTP 5xx", (0, 10))
    max_connections: int = _p(8, "concurrent HTTP connections to the endpoint (several queries at once)", (1, 256))
    # Queries running model steps at once; more are answered rule-based at once (stated), so slow
    # model calls never hold all of the node's executor threads (ros main: 4).
    max_concurrent_queries: int = _p(2, "queries running model steps at once; more are answered rule-based at once (stated), so slow model calls never hold all of the node's executor threads", (1, 256))
    response_format: str = _p("json_object", "json_object | json_schema | none (what the server is asked for)", choices=("json_object", "json_schema", "none"))
    temperature: float = _p(0.0, "sampling temperature of the model's replies", (0.0, 2.0))
    max_tokens: int = _p(512, "tokens the model may write per reply", (1, 1 << 20))
    max_reply_bytes: int = _p(1000000, "a longer HTTP body is a failed step", (1024, 1 << 30))
    # The four steps, each optional.
    parse: bool = _p(True, "LLM parses the query into target, attributes, relations, orientation")
    verify: bool = _p(True, "VLM checks the top candidates on their best views (box drawn)")
    orientation: bool = _p(True, "VLM picks each candidate's facing direction on a yaw grid (\"facing the TV\")")
    decide: bool = _p(True, "LLM picks the answer among the candidates and says why")
    # Bounded context: what one query may send, whatever the size of the map.
    candidates: int = _p(5, "top-K candidates sent to the model", (1, 32))
    anchors: int = _p(3, "anchor objects sent per relation / orientation anchor", (1, 16))
    rooms: int = _p(3, "rooms (with their floors) of the scene graph sent to the decide step: the constraint's, then the candidates'", (1, 64))
    context_tokens: int = _p(2048, "estimated tokens (UTF-8 bytes / 4, images not counted) one step may send, system prompt included; the decide context is trimmed to fit, a step still over it fails unsent", (256, 1 << 20))
    image_size: int = _p(256, "longest side of an image part, pixels", (32, 2048))
    image_format: str = _p("jpeg", "jpeg | png", choices=("jpeg", "png"))
    yaw_bins: int = _p(8, "yaw grid of the orientation step (bin 0 follows a horizontal axis of the object box)", (4, 36))
    verify_weight: float = _p(0.7, "verification: score x ((1 - w) + w x model confidence)", (0.0, 1.0))
    orientation_floor: float = _p(0.1, "orientation: score x (floor + (1 - floor) x facing)", (0.0, 1.0))

    def check(self, prefix: str = "retrieval.llm") -> None:
        """Raise ConfigError naming the first bad parameter of this section, its endpoint
        included (whether enabled or not): what the model steps need before their first call."""
        _check_leaves(self, prefix + ".")
        _check_llm_endpoint(self, prefix)


@dataclass
class RetrievalConfig:
    top_k: int = _p(5, "results per query when the request gives 0", (1, INT_MAX))
    max_query_chars: int = _p(256, "longer query texts are refused", (1, INT_MAX))
    vocabulary: list[str] = _p([], "object nouns for labels; empty: the built-in ScanNet-200-style list")
    # [0, 0, 0] = auto: the dataset's up where its format defines it, else estimated from the
    # cameras and the horizontal planes (offline runs); a ROS map frame is z-up (REP 103).
    up_axis: list[float] = _p([0.0, 0.0, 0.0], "world up; [0, 0, 0] = auto (offline: the dataset's up, else estimated from the cameras and the floor; ROS: z, REP 103); anything else overrides")
    # Semantic scoring: S = exp((cos - best cos) / temperature), the softmax normalised by its max.
    text_template: str = _p("a photo of a {}", "prompt for the text encoder; {} is the noun phrase")
    temperature: float = _p(0.02, "softmax temperature of the semantic score", (1e-06, INF))
    label_bonus: float = _p(0.02, "cosine bonus when an object's label equals the noun (semantic only)", (0.0, 1.0))
    color_weight: float = _p(0.5, "noun matched by text: colour factor (1 - w) + w * match; else match", (0.0, 1.0))
    relation_floor: float = _p(0.05, "relation factor floor + (1 - floor) * R; R = 0 keeps this share", (0.0, 1.0))
    superlative_gate: float = _p(0.5, "superlatives rank objects scoring at least gate x the best", (0.0, 1.0))
    superlative_floor: float = _p(0.1, "multiplier of the least extreme eligible object", (0.0, 1.0))
    target_candidates: int = _p(64, "top-M targets (by similarity) checked for relations", (1, INT_MAX))
    anchor_candidates: int = _p(16, "top-M anchors per anchor phrase", (1, INT_MAX))
    local_anchor_radius: float = _p(3.0, "metres: also check good anchors this close to a candidate", (0.0, INF))
    local_anchor_gate: float = _p(0.5, "\"good\": anchor score >= gate x the best anchor's", (0.0, 1.0))
    max_geometric_targets: int = _p(20000, "without a target noun: objects scored geometrically", (1, INT_MAX))
    # Spatial relations (metres).
    near_distance: float = _p(0.5, "metres: gap between boxes at which \"near\" scores 0.5", (0.0, INF))
    near_softness: float = _p(0.1, "metres: logistic width of the near threshold", (0.0, INF))
    contact_tolerance: float = _p(0.05, "metres: \"on\": bottom of target vs top of anchor", (0.0, INF))
    footprint_margin: float = _p(0.03, "metres: soft margin of footprint / box containment", (0.0, INF))
    lateral_range: float = _p(2.0, "metres: left/right/in front/behind fade beyond this distance", (0.0, INF))
    between_tolerance: float = _p(0.3, "metres: minimum off-line tolerance of \"between\"", (0.0, INF))
    llm: LlmConfig = field(default_factory=LlmConfig)  # optional LLM / VLM steps (off by default)


# QoS profiles of an input subscription (ros.color_qos, ...); see RosConfig.
QOS_PROFILES = ("default", "sensor_data", "reliable", "best_effort", "system_default")


@dataclass
class RosConfig:
    color_topic: str = _p("camera/color/image_raw", "colour image topic (sensor_msgs/Image; with color_transport compressed: <topic>/compressed)")
    depth_topic: str = _p("camera/depth/image_raw", "depth image topic (16UC1 mm or 32FC1 m; with depth_transport compressedDepth: <topic>/compressedDepth)")
    info_topic: str = _p("camera/color/camera_info", "camera info topic of the colour camera (sensor_msgs/CameraInfo)")
    pose_topic: str = _p("camera/pose", "pose topic (pose_type pose: PoseStamped, odometry: nav_msgs/Odometry)")
    instance_topic: str = _p("", "optional per-pixel instance ids (32SC1/16UC1, 0 = none) for the oracle segmenter; empty: not subscribed")
    pose_type: str = _p("pose", "pose (PoseStamped) | odometry | tf", choices=("pose", "odometry", "tf"))
    map_frame: str = _p("map", "fixed frame of the map (REP 105); poses and TF are expressed in it")
    camera_frame: str = _p("", "for pose_type=tf; empty: the image header's frame_id")
    qos_reliability: str = _p("best_effort", "best_effort | reliable", choices=("best_effort", "reliable"))
    qos_depth: int = _p(10, "queue depth of the input subscriptions (the default QoS profile)", (1, INT_MAX))
    sync_slop: float = _p(0.05, "seconds: approximate-time sync tolerance between colour and the other inputs", (0.0, INF))
    sync_queue: int = _p(30, "messages kept per input while synchronising", (1, INT_MAX))
    max_pose_age: float = _p(0.2, "seconds between image stamp and nearest pose", (0.0, INF))
    work_queue: int = _p(4, "bounded queue between callbacks and the mapping worker", (1, INT_MAX))
    service_queue: int = _p(100, "requests each service keeps while its callbacks are busy (DDS keep-last depth; beyond it the oldest are lost)", (1, 100_000))
    # Where the models run: in_process (a perception node in the mapping node's process, linked
    # by the core3d/observations topic), external (a perception node elsewhere, e.g. a GPU box),
    # inline (the mapping worker runs them itself and waits for them; offline-style runs).
    perception: str = _p("in_process", "where the models run: in_process (a perception node in this process, linked by core3d/observations) | external (a perception node elsewhere) | inline (the mapping worker runs them and waits)", choices=("in_process", "external", "inline"))
    perception_nice: int = _p(10, "a perception node in its own process lowers its OS priority by this much, so that mapping and queries get the CPU first (0: unchanged)", (0, 19))
    perception_threads: int = _p(0, "CPU threads of the models (torch) in a perception node; 0: all cores but one, which is left to mapping", (0, 1024))
    frame_buffer: int = _p(60, "frames kept by stamp for observations that arrive later", (1, INT_MAX))
    frame_buffer_mb: float = _p(1024.0, "most megabytes the frame buffer holds (colour, depth, ground truth); beyond it its oldest unpinned frames leave (counted), the newest always stays", (1.0, INF))
    max_pinned_frames: int = _p(4, "frames perception claimed, kept beyond the buffer until their observation is fused", (1, INT_MAX))
    publish_period: float = _p(1.0, "seconds between map publications", (0.001, INF))
    publish_points: bool = _p(True, "publish the map point cloud on core3d/cloud")
    cloud_max_points: int = _p(500_000, "most points in one core3d/cloud message: a bigger map is thinned evenly (every 2nd, 4th, ... voxel of each object)", (1, INT_MAX))
    publish_surface: bool = _p(True, "publish changed TSDF blocks as markers on core3d/surface (needs geometry.enabled)")
    # The map stream (core3d/map_updates, core3d/get_map_state) that query nodes mirror.
    publish_map_updates: bool = _p(True, "publish what changed at each map publication on core3d/map_updates and serve the full state on core3d/get_map_state (what core3d-query-node mirrors)")
    stream_voxel_sample: int = _p(2000, "most voxel centres per object in the map stream, for a query node's spatial relations (every k-th voxel of a bigger object)", (1, INT_MAX))
    query_namespace: str = _p("core3d", "namespace of this mapping node's query and get_object services: core3d (core3d/query) | core3d/mapping (core3d/mapping/query, when a query node serves core3d/query)", choices=("core3d", "core3d/mapping"))
    marker_style: str = _p("line_list", "object boxes in core3d/markers: line_list (wire frame) | cube", choices=("line_list", "cube"))
    map_path: str = _p("", "load this map at start-up when set (relative: inside maps_dir)")
    # Map files are read and written only inside this directory (created when needed); a
    # relative path in save_map / load_map / map_path resolves inside it.
    maps_dir: str = _p("~/.ros/core3d/maps", "map files are read and written only inside this directory; relative paths resolve inside it")
    allow_any_map_path: bool = _p(False, "true: save_map / load_map / map_path may use any directory (device files are still refused)")
    # Camera extrinsics (REP 103 / REP 105). Pose and odometry inputs give the pose of some frame
    # in map_frame; the map needs the camera optical frame's. With base_frame set, the static TF
    # base_frame <- image frame_id is composed on; otherwise camera_extrinsic (or identity).
    base_frame: str = _p("", "frame whose pose the pose/odometry input gives (e.g. base_link); the camera optical pose is composed with TF base_frame <- image frame_id; empty: use camera_extrinsic")
    camera_extrinsic: list[float] = _p([], "pose of the camera optical frame in the pose input's frame: x y z qx qy qz qw (metres, unit quaternion); empty: identity (the pose input is the camera optical frame's)")
    tf_timeout: float = _p(0.05, "seconds to wait for a TF at the image stamp before the frame is refused (no_transform)", (0.0, 10.0))
    # Compressed inputs (image_transport names: <topic>/compressed, <topic>/compressedDepth).
    color_transport: str = _p("raw", "raw (sensor_msgs/Image on color_topic) | compressed (sensor_msgs/CompressedImage on color_topic/compressed)", choices=("raw", "compressed"))
    depth_transport: str = _p("raw", "raw (sensor_msgs/Image on depth_topic) | compressedDepth (sensor_msgs/CompressedImage on depth_topic/compressedDepth)", choices=("raw", "compressedDepth"))
    # QoS per input: default (qos_reliability, qos_depth, volatile; best_effort = sensor data) |
    # sensor_data | reliable | best_effort | system_default.
    color_qos: str = _p("default", "QoS of the colour subscription: default | sensor_data | reliable | best_effort | system_default", choices=QOS_PROFILES)
    depth_qos: str = _p("default", "QoS of the depth subscription (as color_qos)", choices=QOS_PROFILES)
    info_qos: str = _p("default", "QoS of the camera info subscription (as color_qos)", choices=QOS_PROFILES)
    pose_qos: str = _p("default", "QoS of the pose / odometry subscription (as color_qos)", choices=QOS_PROFILES)
    # Pose corrections from SLAM (ros/corrections.py): nav_msgs/Path of keyframe stamps and their
    # corrected poses (the pose input's body, in map_frame).
    corrections_topic: str = _p("core3d/keyframe_poses", "corrected keyframe poses from SLAM (nav_msgs/Path: each pose's stamp a fused frame's, its pose the pose input's body in map_frame); empty: not subscribed")


@dataclass
class QueryConfig:
    """The query node (core3d-query-node); the mapping node ignores this section."""

    namespaces: list[str] = _p([], "namespaces of the mapping nodes (robots) whose maps the query node serves as one, in a shared map frame: robot1 mirrors robot1/core3d/map_updates; empty: the one mapping node beside it (core3d/map_updates)")
    fetch_timeout: float = _p(0.5, "seconds the query node waits for an object's points from its mapping node (<ns>/core3d/mapping/get_object) before it answers with the stream's voxel sample", (0.001, 60.0))
    index_cell: float = _p(1.0, "metres: cell of the grid that finds other robots' objects whose boxes overlap a changed object (the candidates of a merge)", (0.01, 1000.0))


@dataclass
class HierarchyConfig:
    """Floors -> rooms -> objects built from the TSDF surface while mapping (core/hierarchy/)."""

    enabled: bool = _p(True, "keep the floors/rooms hierarchy current while mapping")
    period: float = _p(2.0, "seconds: the hierarchy is recomputed at most this often (only floors whose area changed)", (0.0, INF))
    cell_size: float = _p(0.1, "metres: cell of the bird's-eye grid the rooms are segmented on", (0.01, 2.0))
    height_bin: float = _p(0.05, "metres: bin of the height histogram the floors are found in", (0.005, 1.0))
    min_floor_area: float = _p(3.0, "m^2 of horizontal surface at one height that makes a floor", (0.0, INF))
    storey_gap: float = _p(1.5, "metres: camera heights further apart than this are on different storeys", (0.1, INF))
    min_camera_height: float = _p(0.25, "metres: a floor lies at least this far below the cameras of its storey", (0.0, INF))
    max_camera_height: float = _p(2.2, "metres: ... and at most this far", (0.0, INF))
    wall_low: float = _p(1.3, "metres above the floor: surface between wall_low and wall_high (above most furniture, below door lintels) is wall", (0.0, INF))
    wall_high: float = _p(1.9, "metres above the floor: top of the wall band", (0.0, INF))
    door_width: float = _p(1.1, "metres: free passages narrower than this separate rooms (watershed markers lie farther than half of it from walls)", (0.1, INF))
    min_room_area: float = _p(1.5, "m^2: smaller regions are not rooms (a room seen through a doorway only)", (0.0, INF))
    camera_radius: float = _p(0.3, "metres: free space around each camera centre (where the robot went)", (0.0, INF))
    match_overlap: float = _p(0.3, "a new room keeps an old room's id when it holds this share of the old room's cells", (0.0, 1.0))
    keyframes_per_room: int = _p(5, "room keyframes kept per room (greedy coverage of its surface)", (1, INT_MAX))
    keyframe_bytes: int = _p(4_000_000, "bytes all room keyframes may hold together", (1, INT_MAX))
    keyframe_min_gain: float = _p(0.1, "a view becomes a room keyframe when it adds this share of new surface cells to its room", (0.0, 1.0))
    coverage_cell: float = _p(0.2, "metres: surface cell the keyframe coverage is counted in", (0.01, 2.0))
    room_vocabulary: list[str] = _p([], "room classes rooms are labelled with from their keyframes (with a semantic encoder); empty: kitchen, office, bathroom, bedroom, living room, corridor, ... (core/hierarchy/room_labels.py)")
    summaries: bool = _p(True, "with retrieval.llm enabled: room and floor summaries from the model, grounded in the rooms' labels and objects (asynchronous; off: no summaries)")


@dataclass
class MapperConfig:
    depth: DepthConfig = field(default_factory=DepthConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    geometry: GeometryConfig = field(default_factory=GeometryConfig)
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    keyframes: KeyframeConfig = field(default_factory=KeyframeConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    hierarchy: HierarchyConfig = field(default_factory=HierarchyConfig)
    ros: RosConfig = field(default_factory=RosConfig)
    query: QueryConfig = field(default_factory=QueryConfig)


class ConfigError(ValueError):
    """A configuration value is unknown, has the wrong type or cannot be run with. The message
    is one line naming the parameter."""


# ---------------------------------------------------------------------------------- validation


def validate(cfg: MapperConfig) -> MapperConfig:
    """Return ``cfg`` if every value can be run with; else raise ConfigError, one line naming the
    first bad parameter (``fusion.voxel_size must be in [0.0001, 10.0], got 0.0``).

    Ranges and choices come from the fields' metadata (``_p``); the rules between fields follow.
    ``from_dict`` and ``load_config`` call it, and so do the nodes on their parameters, so the
    ``core3d`` command and every node refuse a value in the same words.
    """
    _check_leaves(cfg, "")
    _check_devices(cfg)
    _check_ros(cfg.ros)
    _check_query(cfg.query)
    _check_up(cfg.retrieval.up_axis)
    _check_hierarchy(cfg.hierarchy)
    if cfg.retrieval.llm.enabled:
        _check_llm_endpoint(cfg.retrieval.llm, "retrieval.llm")
    return cfg


def _check_value(name: str, value: Any, meta: dict[str, Any]) -> None:
    lo_hi = meta.get("range")
    if lo_hi is not None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        lo, hi = lo_hi
        if not lo <= value <= hi:  # NaN fails too
            bound = f">= {lo!r}" if hi in (INF, INT_MAX) else f"in [{lo!r}, {hi!r}]"
            raise ConfigError(f"{name} must be {bound}, got {value!r}")
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{name} must be one of {' | '.join(choices)}, got {value!r}")


def _check_leaves(section: Any, prefix: str) -> None:
    """Range and choices of every leaf under ``section`` (list items one by one)."""
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        name = prefix + f.name
        if dataclasses.is_dataclass(value):
            _check_leaves(value, name + ".")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                _check_value(f"{name}[{i}]", item, f.metadata)
        else:
            _check_value(name, value, f.metadata)


def _is_device(name: str, auto: bool) -> bool:
    d = str(name).lower()
    return d in ("cpu", "cuda") or (auto and d == "auto") or (d.startswith("cuda:") and d[5:].isdigit())


def _check_devices(cfg: MapperConfig) -> None:
    # Open3D devices; the torch devices of the models (segmenter.device, embed.device) are
    # checked by their back-ends, which know what this machine has.
    if not _is_device(cfg.fusion.device, auto=False):
        raise ConfigError(f"fusion.device must be cpu, cuda or cuda:N, got {cfg.fusion.device!r}")
    if not _is_device(cfg.geometry.device, auto=True):
        raise ConfigError(f"geometry.device must be auto, cpu or cuda[:N], got {cfg.geometry.device!r}")


def _check_ros(ros: RosConfig) -> None:
    for name in ("color_topic", "depth_topic", "info_topic", "map_frame", "maps_dir"):
        if not getattr(ros, name):
            raise ConfigError(f"ros.{name} must not be empty")
    if ros.pose_type != "tf" and not ros.pose_topic:
        raise ConfigError("ros.pose_topic must not be empty unless ros.pose_type is 'tf'")
    if ros.camera_extrinsic:
        from .core.transforms import TransformError, xyzquat_to_matrix

        try:
            xyzquat_to_matrix(ros.camera_extrinsic)
        except TransformError as e:
            raise ConfigError(f"ros.camera_extrinsic: {e}") from None
    if ros.base_frame and ros.camera_extrinsic:
        raise ConfigError("ros.base_frame and ros.camera_extrinsic are exclusive: the extrinsic comes from TF or from the parameter")
    if ros.pose_type == "tf" and (ros.base_frame or ros.camera_extrinsic):
        raise ConfigError(
            "ros.base_frame / ros.camera_extrinsic apply to pose and odometry inputs; with ros.pose_type 'tf' "
            "the whole chain map_frame <- camera comes from TF"
        )


def _check_query(query: QueryConfig) -> None:
    import re

    for i, ns in enumerate(query.namespaces):
        if not re.fullmatch(r"/?[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*", ns):
            raise ConfigError(f"query.namespaces[{i}]: {ns!r} is not a ROS namespace (letters, digits, _ and /, not starting with a digit)")
        if ns.strip("/") in [n.strip("/") for n in query.namespaces[:i]]:
            raise ConfigError(f"query.namespaces[{i}]: {ns!r} is listed twice")
def up_vector(up_axis: list[float]) -> list[float]:
    """``retrieval.up_axis`` as a unit vector; auto ([0, 0, 0]) is z (REP 103) for callers that
    have no dataset to take it from (offline runs resolve auto first: core/hierarchy/up.py)."""
    import math

    if is_auto_up(up_axis):
        return [0.0, 0.0, 1.0]
    n = math.sqrt(sum(float(v) ** 2 for v in up_axis))
    return [float(v) / n for v in up_axis]


def is_auto_up(up_axis: list[float]) -> bool:
    return len(up_axis) == 3 and all(float(v) == 0.0 for v in up_axis)


def _check_up(up: list[float]) -> None:
    import math

    if len(up) != 3 or not all(math.isfinite(float(v)) for v in up):
        raise ConfigError(f"retrieval.up_axis must be 3 finite numbers ([0, 0, 0] = auto), got {up!r}")
    if not is_auto_up(up) and math.sqrt(sum(float(v) ** 2 for v in up)) < 1e-6:
        raise ConfigError(f"retrieval.up_axis must be [0, 0, 0] (auto) or a non-zero direction, got {up!r}")


def _check_hierarchy(h: HierarchyConfig) -> None:
    if not h.wall_low < h.wall_high:
        raise ConfigError(f"hierarchy.wall_low ({h.wall_low}) must be below hierarchy.wall_high ({h.wall_high})")
    if not h.min_camera_height < h.max_camera_height:
        raise ConfigError(
            f"hierarchy.min_camera_height ({h.min_camera_height}) must be below hierarchy.max_camera_height ({h.max_camera_height})"
        )


def _check_llm_endpoint(llm: LlmConfig, prefix: str) -> None:
    """What the model steps need to make their first call: an http(s) URL, a model, a key name."""
    from urllib.parse import urlsplit

    url = llm.base_url.strip()
    if not url:
        raise ConfigError(f"{prefix}.base_url: empty; set the endpoint, e.g. http://127.0.0.1:8000/v1")
    try:
        u = urlsplit(url)
        host = u.hostname
    except ValueError as e:
        raise ConfigError(f"{prefix}.base_url: {url!r} is not a URL ({e})") from None
    if u.scheme not in ("http", "https") or not host:
        raise ConfigError(f"{prefix}.base_url: {url!r} must be an http:// or https:// URL with a host")
    if not llm.model.strip():
        raise ConfigError(f"{prefix}.model: empty; set the model name the server serves")
    k = llm.api_key_env
    if k and not (k.isascii() and k.replace("_", "a").isalnum() and not k[0].isdigit()):
        raise ConfigError(f"{prefix}.api_key_env: {k!r} is not an environment variable name")


# ---------------------------------------------------------------------------------- loading


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
    """Build a MapperConfig from a nested mapping; missing keys keep their defaults. An unknown
    key, a wrong type or a value ``validate`` refuses raises ConfigError naming the parameter."""
    return validate(_from_dict(MapperConfig, data or {}))


def load_config(path: str | Path | None) -> MapperConfig:
    """Load YAML: a nested mapping, or a ROS 2 parameters file (first node's ros__parameters).
    The result is validated (``validate``): a bad value fails here, naming the parameter."""
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

def with_overrides(cfg: MapperConfig, **sections) -> MapperConfig:
    """Copy of cfg with fields replaced per section: with_overrides(cfg, fusion={"voxel_size": 0.05})."""
    for name, fields in sections.items():
        cfg = dataclasses.replace(cfg, **{name: dataclasses.replace(getattr(cfg, name), **fields)})
    return cfg
