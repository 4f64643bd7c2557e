"""Ablation of the mapping method on the synthetic room (``core3d eval --ablation``).

Each variant switches one component off, everything else at its defaults, and maps the same
frames with the same segmenter. Reported per variant: 3-D instance metrics over the objects
(floor and walls ignored) and over all instances, and, for the surroundings term, how well the
objects' embeddings name their colour (the deterministic ``mean_color`` test encoder embeds a
crop's mean colour, so the ideal object embedding is its own colour's).

Variants (as in CORE-3D's ablation, plus this engine's own mechanisms):

- ``full``: everything on;
- ``no_progressive_coarse`` / ``no_progressive_fine``: a single granularity level (the coarsest,
  or the finest) instead of the progressive merge of levels;
- ``no_dbscan``: masks are not split in 3-D;
- ``no_balance``: the balance test off (delta = 1: any pair with both IoVs > gamma passes);
- ``no_surroundings``: the negative surroundings crop off (w_sur = 0);
- ``no_co_mask`` / ``no_known_only``: the engine's evidence of pieces seen in one mask, and the
  segment-side IoV over known voxels, off;
- ``no_hidden_side``: a segment showing new space no longer joins the unseen object it lies
  next to (the front of a thin thing seen from behind), ``hidden_side_voxels`` = 0.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from ..config import MapperConfig, with_overrides
from ..core.mapper import Mapper
from .runs import evaluate_mapper, map_frames

METRICS = ("mean_iou_gt", "ap", "precision", "recall", "over_segmented", "under_segmented", "num_pred")


def variants(base: MapperConfig) -> dict[str, MapperConfig]:
    geo = base.segmenter.geometric
    coarse = dataclasses.replace(geo, cluster_eps=geo.cluster_eps[:1], concave_deg=geo.concave_deg[:1])
    fine = dataclasses.replace(geo, cluster_eps=geo.cluster_eps[-1:], concave_deg=geo.concave_deg[-1:])
    seg = base.segmenter
    return {
        "full": base,
        "no_progressive_coarse": dataclasses.replace(base, segmenter=dataclasses.replace(seg, geometric=coarse, granularity_levels=seg.granularity_levels[:1])),
        "no_progressive_fine": dataclasses.replace(base, segmenter=dataclasses.replace(seg, geometric=fine, granularity_levels=seg.granularity_levels[-1:])),
        "no_dbscan": with_overrides(base, fusion={"dbscan_split": False}),
        "no_balance": with_overrides(base, fusion={"delta": 1.0}),
        "no_surroundings": with_overrides(base, embed={"w_sur": 0.0}),
        "no_co_mask": with_overrides(base, fusion={"co_mask_votes": 0}),
        "no_known_only": with_overrides(base, fusion={"iov_known_only": False}),
        "no_hidden_side": with_overrides(base, fusion={"hidden_side_voxels": 0}),
    }


def colour_accuracy(mapper: Mapper, scene, per_gt: dict) -> float | None:
    """Share of matched objects whose embedding is closest (cosine) to the mean_color embedding
    of their own class colour, among the scene's object class colours; and the mean cosine to
    their own colour's embedding."""
    objects = [o for o in scene.objects]
    if not objects:
        return None
    classes = sorted({o.class_name for o in objects})
    colour = {o.class_name: np.asarray(o.color, np.float64) / 255.0 for o in objects}
    refs = np.stack([np.append(colour[c], 1.0) for c in classes])
    refs /= np.linalg.norm(refs, axis=1, keepdims=True)
    by_id = {o.id: o for o in objects}
    emb = {oid: st.embedding for oid, st in mapper.map.objects.items()}
    right = total = 0
    cos = []
    for gid, m in per_gt.items():
        obj = by_id.get(int(gid))
        if obj is None or m["pred"] is None or emb.get(m["pred"]) is None:
            continue
        total += 1
        sims = refs @ emb[m["pred"]]
        right += classes[int(np.argmax(sims))] == obj.class_name
        cos.append(float(sims[classes.index(obj.class_name)]))
    if not total:
        return None, None
    return right / total, float(np.mean(cos))


def run_ablation(scene, base: MapperConfig, segmenter: str, progress: Callable | None = None) -> dict:
    base = with_overrides(base, segmenter={"name": segmenter}, keyframes={"enabled": False}, embed={"name": "mean_color"})
    frames = [scene[i] for i in range(len(scene))]
    out = {}
    for name, cfg in variants(base).items():
        mapper = Mapper(cfg)
        map_frames(mapper, scene, progress(f"{segmenter}/{name}") if progress else None)
        metrics = evaluate_mapper(mapper, frames)
        row = {part: {k: metrics[part][k] for k in METRICS} for part in ("objects_only", "all_instances")}
        row["colour_top1"], row["colour_cosine"] = colour_accuracy(mapper, scene, metrics["objects_only"]["per_gt"])
        out[name] = row
    return out


def markdown_table(results: dict) -> str:
    """One Markdown table per segmenter: objects-only metrics and the embedding colour accuracy."""
    lines = []
    for seg, rows in results.items():
        lines.append(f"Segmenter `{seg}` (objects only; floor and walls ignored):\n")
        lines.append("| variant | mean IoU | AP@0.5 | precision | over-seg | under-seg | predictions | colour top-1 | colour cosine |")
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for name, row in rows.items():
            m = row["objects_only"]
            c = row["colour_top1"]
            lines.append(
                f"| {name} | {m['mean_iou_gt']:.3f} | {m['ap']:.3f} | {m['precision']:.3f} | {m['over_segmented']} | "
                f"{m['under_segmented']} | {m['num_pred']} | {'-' if c is None else f'{c:.2f}'} | "
                f"{'-' if row['colour_cosine'] is None else format(row['colour_cosine'], '.4f')} |"
            )
        lines.append("")
    return "\n".join(lines)
