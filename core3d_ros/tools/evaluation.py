"""3-D instance segmentation metrics on voxel sets.

Instances, predicted and ground truth, are sets of voxels given as sorted unique int64 voxel
keys (:func:`core3d_ros.core.fusion.voxels.voxel_keys`). Ground truth comes from frames that
carry per-pixel instance ids (the synthetic scene, or labelled datasets) through
:func:`collect_ground_truth`; :func:`evaluate_instances` compares a prediction with it.

Definitions used by :class:`EvalResult` (IoU = |P ∩ G| / |P ∪ G| in voxels):

- ``mean_iou_gt``: one-to-one Hungarian matching maximising total IoU; the mean over *all*
  ground-truth instances of their matched IoU, unmatched ones counting 0.
- ``mean_iou_matched``: the mean IoU over the Hungarian pairs with IoU > 0 only.
- ``ap``: average precision at ``iou_threshold``. Predictions are sorted by score (descending;
  without scores, by voxel count), each is greedily matched to the unmatched ground truth with
  the highest IoU >= threshold (true positive) or counts as a false positive; AP is the area
  under the precision-recall curve with the precision envelope made monotone (all-point
  interpolation, as in PASCAL VOC / COCO).
- ``precision`` / ``recall``: true positives of that greedy matching over all predictions / over
  all ground-truth instances.
- ``over_segmented``: ground-truth instances G split into pieces, i.e. with at least two
  predictions P that each lie mostly inside G (|P ∩ G| >= ``frag_min_inside`` |P|, 0.5) and each
  cover a noticeable part of it (|P ∩ G| >= ``frag_min_cover`` |G|, 0.1).
- ``under_segmented``: predictions P that swallow several objects, i.e. that cover at least
  ``frag_min_cover`` (0.1) of each of two or more ground-truth instances.
- Ignored ground truth (``ignore_gt``, e.g. floor and walls) is left out of every count;
  predictions with more than half of their voxels inside ignored instances are left out too
  (``num_pred_ignored``), so mapping the floor is neither rewarded nor punished.

Ratios with an empty denominator (no predictions, no ground truth) are reported as 0.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Iterable

import numpy as np
from scipy import sparse
from scipy.optimize import linear_sum_assignment

from ..core.camera import backproject
from ..core.fusion.voxels import voxel_keys
from ..core.frame import Frame

STRUCTURE_CLASSES = ("floor", "wall", "ceiling")
FOLD_VOTES = 2_000_000  # pending (voxel, id) votes that trigger a reduction (bounds memory)


# --------------------------------------------------------------------------------------------
# Ground truth from labelled frames


@dataclass
class GroundTruth:
    voxels: dict[int, np.ndarray]  # instance id -> sorted unique int64 voxel keys
    classes: dict[int, str]  # instance id -> class name (from the frames' instance_classes)
    voxel_size: float
    frames_used: int = 0
    frames_without_labels: int = 0

    def ignore_ids(self, class_names: Iterable[str] = STRUCTURE_CLASSES) -> set[int]:
        """Ids of instances whose class is one of ``class_names`` (by default floor/wall/ceiling)."""
        names = set(class_names)
        return {i for i, c in self.classes.items() if c in names}


def _reduce_votes(keys: np.ndarray, ids: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sum counts of identical (key, id) pairs."""
    if keys.size == 0:
        return keys, ids, counts
    order = np.lexsort((ids, keys))
    k, i, c = keys[order], ids[order], counts[order]
    start = np.ones(k.size, dtype=bool)
    start[1:] = (k[1:] != k[:-1]) | (i[1:] != i[:-1])
    idx = np.flatnonzero(start)
    return k[idx], i[idx], np.add.reduceat(c, idx)


def collect_ground_truth(frames: Iterable[Frame], voxel_size: float, stride: int = 2) -> GroundTruth:
    """Back-project the ground-truth instance ids of all frames into voxels.

    Every ``stride``-th pixel with valid depth and a non-zero instance id votes for its id in its
    voxel; each voxel goes to its majority instance (ties: the smaller id). Frames without
    ``instance_ids`` are skipped and counted.
    """
    if voxel_size <= 0:
        raise ValueError(f"voxel_size must be positive, got {voxel_size}")
    keys_acc: list[np.ndarray] = []
    ids_acc: list[np.ndarray] = []
    cnt_acc: list[np.ndarray] = []
    pending = 0
    classes: dict[int, str] = {}
    used = unlabelled = 0
    state = (np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64))
    for frame in frames:
        if frame.instance_ids is None:
            unlabelled += 1
            continue
        used += 1
        classes.update(frame.instance_classes)
        labels = np.asarray(frame.instance_ids)
        pts, flat = backproject(frame.depth, frame.intrinsics, frame.pose, stride=stride, mask=labels > 0)
        if pts.shape[0] == 0:
            continue
        keys_acc.append(voxel_keys(pts, voxel_size))
        ids_acc.append(labels.reshape(-1)[flat].astype(np.int64))
        cnt_acc.append(np.ones(pts.shape[0], dtype=np.int64))
        pending += pts.shape[0]
        if pending > FOLD_VOTES:  # bound memory: fold the votes gathered so far
            state = _reduce_votes(
                np.concatenate([state[0], *keys_acc]),
                np.concatenate([state[1], *ids_acc]),
                np.concatenate([state[2], *cnt_acc]),
            )
            keys_acc, ids_acc, cnt_acc, pending = [], [], [], 0
    k, i, c = _reduce_votes(
        np.concatenate([state[0], *keys_acc]),
        np.concatenate([state[1], *ids_acc]),
        np.concatenate([state[2], *cnt_acc]),
    )
    voxels: dict[int, np.ndarray] = {}
    if k.size:
        # Majority per voxel: sort by key, then count descending, then id ascending.
        order = np.lexsort((i, -c, k))
        k, i = k[order], i[order]
        first = np.ones(k.size, dtype=bool)
        first[1:] = k[1:] != k[:-1]
        k, i = k[first], i[first]
        order = np.lexsort((k, i))
        k, i = k[order], i[order]
        bounds = np.flatnonzero(np.diff(i)) + 1
        for ks, iid in zip(np.split(k, bounds), i[np.r_[0, bounds]]):
            voxels[int(iid)] = ks  # sorted and unique: keys are unique after the majority vote
    return GroundTruth(voxels=voxels, classes=classes, voxel_size=float(voxel_size), frames_used=used,
                       frames_without_labels=unlabelled)


def gt_instance_voxels(frames: Iterable[Frame], voxel_size: float, stride: int = 2) -> dict[int, np.ndarray]:
    """Instance id -> sorted unique voxel keys (see :func:`collect_ground_truth`, which also
    returns the class names)."""
    return collect_ground_truth(frames, voxel_size, stride).voxels


# --------------------------------------------------------------------------------------------
# Metrics


@dataclass
class EvalResult:
    num_gt: int  # ground-truth instances evaluated (ignored ones excluded)
    num_pred: int  # predictions evaluated (ignored ones excluded)
    num_pred_ignored: int  # predictions lying mostly in ignored ground truth
    iou_threshold: float
    mean_iou_gt: float  # Hungarian IoU averaged over all GT, unmatched GT count 0
    mean_iou_matched: float  # Hungarian IoU averaged over matched pairs (IoU > 0) only
    num_matched: int  # Hungarian pairs with IoU > 0
    ap: float  # average precision at iou_threshold
    precision: float  # TP / num_pred at iou_threshold (greedy by score)
    recall: float  # TP / num_gt at iou_threshold
    true_positives: int
    false_positives: int
    false_negatives: int
    over_segmented: int  # GT instances split over >= 2 predictions (see module doc)
    under_segmented: int  # predictions covering >= 2 GT instances (see module doc)
    per_gt: dict[int, dict] = field(default_factory=dict)  # gt id -> {pred, iou} (Hungarian)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["per_gt"] = {str(k): v for k, v in self.per_gt.items()}
        return d


def _unique_sorted(keys: np.ndarray) -> np.ndarray:
    keys = np.asarray(keys, dtype=np.int64).reshape(-1)
    if keys.size > 1 and not np.all(keys[1:] > keys[:-1]):
        keys = np.unique(keys)
    return keys


def _incidence(sets: list[np.ndarray], vocab: np.ndarray) -> sparse.csr_matrix:
    if not sets:
        return sparse.csr_matrix((0, vocab.size))
    rows = np.concatenate([np.full(s.size, r, dtype=np.int64) for r, s in enumerate(sets)])
    cols = np.searchsorted(vocab, np.concatenate(sets))
    data = np.ones(rows.size, dtype=np.float64)
    return sparse.csr_matrix((data, (rows, cols)), shape=(len(sets), vocab.size))


def intersection_matrix(pred: list[np.ndarray], gt: list[np.ndarray]) -> np.ndarray:
    """|P_i ∩ G_j| for all pairs, as a dense (len(pred), len(gt)) float64 array."""
    if not pred or not gt:
        return np.zeros((len(pred), len(gt)))
    vocab = np.unique(np.concatenate([*pred, *gt]))
    P = _incidence(pred, vocab)
    G = _incidence(gt, vocab)
    return np.asarray((P @ G.T).todense(), dtype=np.float64)


def average_precision(tp: np.ndarray, num_gt: int) -> float:
    """All-point interpolated AP of a ranked list of true/false positives."""
    tp = np.asarray(tp, dtype=np.float64)
    if num_gt == 0 or tp.size == 0:
        return 0.0
    ctp = np.cumsum(tp)
    recall = ctp / num_gt
    precision = ctp / np.arange(1, tp.size + 1)
    r = np.concatenate([[0.0], recall, [recall[-1]]])
    p = np.concatenate([[1.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    return float(np.sum((r[1:] - r[:-1]) * p[1:]))


def evaluate_instances(
    pred: dict[int, np.ndarray],
    gt: dict[int, np.ndarray],
    pred_scores: dict[int, float] | None = None,
    iou_threshold: float = 0.5,
    ignore_gt: set[int] | frozenset[int] = frozenset(),
    *,
    frag_min_inside: float = 0.5,
    frag_min_cover: float = 0.1,
) -> EvalResult:
    """Compare predicted with ground-truth instances (voxel key sets); see the module doc."""
    if pred_scores is not None:
        missing = [k for k in pred if k not in pred_scores]
        if missing:
            raise ValueError(f"pred_scores lacks predictions {sorted(missing)[:10]}")
    pred_sets = {int(k): _unique_sorted(v) for k, v in pred.items()}
    pred_sets = {k: v for k, v in pred_sets.items() if v.size}
    gt_all = {int(k): _unique_sorted(v) for k, v in gt.items()}
    gt_all = {k: v for k, v in gt_all.items() if v.size}
    ignored = {k for k in gt_all if k in ignore_gt}
    gt_ids = sorted(k for k in gt_all if k not in ignored)
    ign_ids = sorted(ignored)

    # Drop predictions that lie mostly in ignored ground truth.
    all_pred_ids = sorted(pred_sets)
    num_pred_ignored = 0
    if ign_ids and all_pred_ids:
        inter_ign = intersection_matrix([pred_sets[p] for p in all_pred_ids], [gt_all[g] for g in ign_ids]).sum(axis=1)
        sizes = np.array([pred_sets[p].size for p in all_pred_ids], dtype=np.float64)
        keep = inter_ign <= 0.5 * sizes
        num_pred_ignored = int(np.count_nonzero(~keep))
        pred_ids = [p for p, k in zip(all_pred_ids, keep) if k]
    else:
        pred_ids = all_pred_ids

    P = [pred_sets[p] for p in pred_ids]
    G = [gt_all[g] for g in gt_ids]
    n_p, n_g = len(P), len(G)
    inter = intersection_matrix(P, G)
    psize = np.array([s.size for s in P], dtype=np.float64)
    gsize = np.array([s.size for s in G], dtype=np.float64)
    union = psize[:, None] + gsize[None, :] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)

    # Hungarian matching on IoU.
    per_gt: dict[int, dict] = {g: {"pred": None, "iou": 0.0} for g in gt_ids}
    matched_ious: list[float] = []
    if n_p and n_g:
        rows, cols = linear_sum_assignment(-iou)
        for r, c in zip(rows, cols):
            if iou[r, c] > 0:
                matched_ious.append(float(iou[r, c]))
                per_gt[gt_ids[c]] = {"pred": int(pred_ids[r]), "iou": float(iou[r, c])}
    mean_iou_gt = float(np.sum(matched_ious) / n_g) if n_g else 0.0
    mean_iou_matched = float(np.mean(matched_ious)) if matched_ious else 0.0

    # Greedy matching by score for AP / precision / recall.
    if pred_scores is not None:
        scores = np.array([float(pred_scores[p]) for p in pred_ids], dtype=np.float64)
    else:
        scores = psize.copy()
    order = sorted(range(n_p), key=lambda r: (-scores[r], pred_ids[r]))
    gt_taken = np.zeros(n_g, dtype=bool)
    tp = np.zeros(n_p, dtype=np.float64)
    for rank, r in enumerate(order):
        if n_g == 0:
            break
        cand = np.where(~gt_taken & (iou[r] >= iou_threshold) & (iou[r] > 0), iou[r], -1.0)
        c = int(np.argmax(cand))
        if cand[c] >= 0:
            gt_taken[c] = True
            tp[rank] = 1.0
    n_tp = int(tp.sum())
    ap = average_precision(tp, n_g)

    # Over- and under-segmentation.
    with np.errstate(divide="ignore", invalid="ignore"):
        inside = inter / psize[:, None] if n_p else inter  # share of P inside G
        cover = inter / gsize[None, :] if n_g else inter  # share of G covered by P
    fragment = (inside >= frag_min_inside) & (cover >= frag_min_cover) & (inter > 0)
    over = int(np.count_nonzero(fragment.sum(axis=0) >= 2)) if n_p and n_g else 0
    under = int(np.count_nonzero(((cover >= frag_min_cover) & (inter > 0)).sum(axis=1) >= 2)) if n_p and n_g else 0

    return EvalResult(
        num_gt=n_g,
        num_pred=n_p,
        num_pred_ignored=num_pred_ignored,
        iou_threshold=float(iou_threshold),
        mean_iou_gt=mean_iou_gt,
        mean_iou_matched=mean_iou_matched,
        num_matched=len(matched_ious),
        ap=ap,
        precision=n_tp / n_p if n_p else 0.0,
        recall=n_tp / n_g if n_g else 0.0,
        true_positives=n_tp,
        false_positives=n_p - n_tp,
        false_negatives=n_g - n_tp,
        over_segmented=over,
        under_segmented=under,
        per_gt=per_gt,
    )
