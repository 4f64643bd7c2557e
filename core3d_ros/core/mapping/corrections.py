"""Pose corrections from SLAM, ROS-free: the frames the map was fused with and what a corrected
keyframe pose means for each of them.

    table = KeyframeTable(max_frames=20000, stamp_tolerance=0.005, max_gap=1.0)
    table.record(stamp, pose)                 # every fused frame: the camera pose it was fused with
    result = table.apply([(stamp, T_new), ...], issued=t)
    result.deltas                             # recorded stamp -> T_new @ inv(T_old), frames that moved
    result.refused                            # reason -> count (this batch)

A SLAM system that closes a loop re-estimates its keyframes' poses and publishes them (a path of
(stamp, corrected pose)). The table holds, per fused frame, the camera pose the map used; a
correction for one of its stamps gives that frame's *delta*, the world-frame rigid motion
``T_new @ inv(T_old)`` that takes what was fused with the old pose to where it belongs. The map
moves what each frame anchored by that frame's delta (core/fusion/corrections.py).

Matching: a correction's stamp matches the recorded frame nearest in time within
``stamp_tolerance`` seconds; one that matches none is skipped (a keyframe the map never fused,
or one the budget has dropped) and counted under ``unknown_stamp`` once: a SLAM system
republishes its whole keyframe path on every optimisation, so only unknown stamps newer than
every stamp of the batches examined before are counted (one float of memory over hours; keyframe
paths grow at their end, so each new keyframe is still counted once; a stamp inserted into the
past, or a frame the budget dropped, is skipped silently). Fused frames that are not SLAM
keyframes follow the batch's corrected keyframe nearest in time, if it is within ``max_gap``
seconds (their poses came from tracking against that part of the trajectory); farther frames do
not move. Recorded poses are updated, so a later correction's delta is relative to the pose the
map now reflects.

Refused batches (nothing changes, one count per batch under the reason): a pose that is not a
finite 4x4 (``not_finite``) or not a rigid motion (``not_rigid``), stamps not strictly
increasing along the path (``out_of_order``), a batch issued before the last applied one
(``stale``), or no stamp matching a recorded frame (``unknown_stamp``, counted once per such
batch whether its stamps are new or not).

Budget: at most ``max_frames`` frames (136 bytes each: a float64 stamp and a 4x4 float64 pose);
beyond it the oldest quarter is dropped at once (amortised O(1) per frame). Frames must arrive
in increasing stamp order; one that does not (a looped recording) is not recorded (counted in
``unrecorded``).
"""
from __future__ import annotations

import copy
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

import numpy as np

from ..fusion.voxels import MAX_COORD, pack
from ..transforms import TransformError, check_rigid, invert

FRAME_BYTES = 8 + 16 * 8  # stamp + 4x4 float64 pose

REFUSALS = ("not_finite", "not_rigid", "out_of_order", "stale", "unknown_stamp")


@dataclass
class CorrectionResult:
    """What one batch of corrections did."""

    deltas: dict[float, np.ndarray] = field(default_factory=dict)  # recorded stamp -> 4x4 delta (frames that moved)
    matched: int = 0  # corrections that matched a recorded frame
    refused: Counter = field(default_factory=Counter)  # reason -> count (skipped entries, or the whole batch)
    rejected: str = ""  # set when the whole batch was refused (the table is then unchanged)


class KeyframeTable:
    """The frames the map was fused with (stamp -> camera pose), bounded; see the module doc."""

    def __init__(self, max_frames: int = 20000, stamp_tolerance: float = 0.005, max_gap: float = 1.0, rigid_tolerance: float = 1e-4):
        if max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        if not stamp_tolerance >= 0 or not max_gap >= 0:
            raise ValueError("stamp_tolerance and max_gap must be >= 0")
        self.max_frames = int(max_frames)
        self.stamp_tolerance = float(stamp_tolerance)
        self.max_gap = float(max_gap)
        self.rigid_tolerance = float(rigid_tolerance)
        self._stamps = np.zeros(0, np.float64)
        self._poses = np.zeros((0, 4, 4), np.float64)
        self._n = 0
        self._last_issued: float | None = None
        self._newest_seen = -np.inf  # newest correction stamp of the batches validated so far (reported)
        self.unrecorded = 0  # frames not recorded (stamp not after the last one)
        self.refused: Counter = Counter()  # reason -> count, over all batches
        self.applied = 0  # batches applied
        self.dropped: list[float] = []  # stamps dropped by the budget since the last take_dropped()

    def __len__(self) -> int:
        return self._n

    def memory_bytes(self) -> int:
        return int(self._stamps.nbytes + self._poses.nbytes)

    @property
    def stamps(self) -> np.ndarray:
        return self._stamps[: self._n]

    def pose(self, stamp: float) -> np.ndarray | None:
        """The pose recorded for exactly ``stamp`` (None when absent)."""
        i = int(np.searchsorted(self.stamps, stamp))
        return self._poses[i].copy() if i < self._n and self._stamps[i] == stamp else None

    def record(self, stamp: float, pose: np.ndarray) -> bool:
        """Remember that a frame of ``stamp`` was fused with camera pose ``pose``."""
        stamp = float(stamp)
        if self._n and not stamp > self._stamps[self._n - 1]:
            self.unrecorded += 1
            return False
        if self._n == self.max_frames:
            drop = max(1, self.max_frames // 4)
            self.dropped.extend(self._stamps[:drop].tolist())
            keep = self._n - drop
            self._stamps[:keep] = self._stamps[drop : self._n]
            self._poses[:keep] = self._poses[drop : self._n]
            self._n = keep
        if self._n == len(self._stamps):
            cap = min(self.max_frames, max(64, 2 * len(self._stamps)))
            stamps, poses = np.zeros(cap, np.float64), np.zeros((cap, 4, 4), np.float64)
            stamps[: self._n], poses[: self._n] = self._stamps[: self._n], self._poses[: self._n]
            self._stamps, self._poses = stamps, poses
        self._stamps[self._n] = stamp
        self._poses[self._n] = pose
        self._n += 1
        return True

    def copy(self) -> "KeyframeTable":
        """An independent copy (its arrays too: recording changes them in place)."""
        other = copy.copy(self)
        other._stamps, other._poses = self._stamps[: self._n].copy(), self._poses[: self._n].copy()
        other.refused, other.dropped = Counter(self.refused), list(self.dropped)
        return other

    def state(self) -> dict[str, np.ndarray]:
        """What a saved map keeps of the table (``restore`` takes it back): the recorded
        frames' stamps and poses, when the last applied batch was issued and the newest
        correction stamp already reported (NaN / -inf: none)."""
        last = np.nan if self._last_issued is None else self._last_issued
        return {"stamps": self.stamps.copy(), "poses": self._poses[: self._n].copy(), "marks": np.array([last, self._newest_seen])}

    def restore(self, stamps: np.ndarray, poses: np.ndarray, marks: np.ndarray) -> None:
        """An empty table takes a saved ``state`` back (stamps strictly increasing, poses 4x4;
        validated by the caller); beyond ``max_frames`` the oldest are left out."""
        if self._n:
            raise ValueError("restore needs an empty table")
        stamps, poses = np.asarray(stamps, np.float64)[-self.max_frames:], np.asarray(poses, np.float64)[-self.max_frames:]
        self._stamps, self._poses, self._n = stamps.copy(), poses.copy(), len(stamps)
        self._last_issued = None if np.isnan(marks[0]) else float(marks[0])
        self._newest_seen = float(marks[1])

    def take_dropped(self) -> list[float]:
        """Stamps the budget dropped since the last call (their anchors can no longer move)."""
        out, self.dropped = self.dropped, []
        return out

    def _refuse(self, result: CorrectionResult, reason: str) -> CorrectionResult:
        result.rejected = reason
        result.refused[reason] += 1
        result.deltas = {}
        self.refused[reason] += 1
        return result

    def apply(self, corrections, issued: float | None = None) -> CorrectionResult:
        """Validate a batch of (stamp, 4x4 corrected camera pose) and update the recorded poses;
        returns the deltas of the frames that moved (see the module doc for the rules)."""
        result = CorrectionResult()
        entries = list(corrections)
        stamps = np.zeros(len(entries), np.float64)
        poses = np.zeros((len(entries), 4, 4), np.float64)
        for i, (s, T) in enumerate(entries):
            T = np.asarray(T, np.float64)
            if T.shape != (4, 4) or not np.all(np.isfinite(T)) or not np.isfinite(float(s)):
                return self._refuse(result, "not_finite")
            try:
                poses[i] = check_rigid(T, self.rigid_tolerance)
            except TransformError:
                return self._refuse(result, "not_rigid")
            stamps[i] = float(s)
        if len(stamps) > 1 and not np.all(np.diff(stamps) > 0):
            return self._refuse(result, "out_of_order")
        if issued is not None and self._last_issued is not None and float(issued) < self._last_issued:
            return self._refuse(result, "stale")
        # Match each correction with the recorded frame nearest in time.
        known = self.stamps
        idx = np.full(len(stamps), -1, np.int64)
        if self._n and len(stamps):
            pos = np.clip(np.searchsorted(known, stamps), 1, max(self._n - 1, 1))
            lo = np.minimum(pos - 1, self._n - 1)
            near = np.where(np.abs(known[lo] - stamps) <= np.abs(known[np.minimum(pos, self._n - 1)] - stamps), lo, np.minimum(pos, self._n - 1))
            idx = np.where(np.abs(known[near] - stamps) <= self.stamp_tolerance, near, -1)
        ok = idx >= 0
        unknown = int((~ok & (stamps > self._newest_seen)).sum())  # unknown and not reported before
        if len(stamps):
            self._newest_seen = max(self._newest_seen, float(stamps[-1]))  # stamps increase along the path
        if not ok.any():
            return self._refuse(result, "unknown_stamp")
        if unknown:
            result.refused["unknown_stamp"] += unknown
            self.refused["unknown_stamp"] += unknown
        k_idx, k_new = idx[ok], poses[ok]
        k_idx, first = np.unique(k_idx, return_index=True)  # two corrections of one frame: the first
        k_new = k_new[first]
        result.matched = len(k_idx)
        k_delta = k_new @ np.stack([invert(self._poses[i]) for i in k_idx.tolist()])
        # Every recorded frame within max_gap of a corrected keyframe takes the nearest one's delta.
        lo = int(np.searchsorted(known, known[k_idx[0]] - self.max_gap, side="left"))
        hi = int(np.searchsorted(known, known[k_idx[-1]] + self.max_gap, side="right"))
        span = np.arange(lo, hi)
        ks = known[k_idx]
        pos = np.clip(np.searchsorted(ks, known[span]), 1, max(len(ks) - 1, 1))
        a = np.minimum(pos - 1, len(ks) - 1)
        b = np.minimum(pos, len(ks) - 1)
        nearest = np.where(np.abs(ks[a] - known[span]) <= np.abs(ks[b] - known[span]), a, b)
        close = np.abs(ks[nearest] - known[span]) <= self.max_gap
        span, nearest = span[close], nearest[close]
        deltas = k_delta[nearest]
        new = deltas @ self._poses[span]
        new[np.searchsorted(span, k_idx)] = k_new  # the corrected keyframes: exactly as given
        moved = ~np.all(np.abs(new - self._poses[span]) <= 1e-12, axis=(1, 2))
        self._poses[span] = new
        for i, d in zip(span[moved].tolist(), deltas[moved]):
            result.deltas[float(known[i])] = d
        if issued is not None:
            self._last_issued = float(issued)
        self.applied += 1
        return result


class DepthStore:
    """The depth images of recent fused frames (float32, at the pixel stride they were fused
    with), within a byte budget (the oldest go first), so that a correction can re-project a
    frame's own pixels instead of moving voxel centres: ``key_pairs`` gives, per pixel, its voxel
    under the old pose and under the new one."""

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self._frames: OrderedDict[int, tuple] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._frames)

    def memory_bytes(self) -> int:
        return self._bytes

    def add(self, key: int, depth: np.ndarray, intrinsics, stride: int) -> None:
        """Keep a copy of ``depth`` (float32); the oldest frames go when over the budget, and the
        buffer of one of them is reused (no new allocation once the budget is reached)."""
        nbytes = depth.size * 4
        if nbytes > self.max_bytes:
            return
        spare = None
        while self._frames and self._bytes + nbytes > self.max_bytes:
            _, (old, _, _) = self._frames.popitem(last=False)
            self._bytes -= old.nbytes
            if old.shape == depth.shape:
                spare = old
        d = spare if spare is not None else np.empty(depth.shape, np.float32)
        np.copyto(d, depth, casting="same_kind")
        self._frames[key] = (d, intrinsics, int(stride))
        self._bytes += d.nbytes

    def drop(self, key: int) -> None:
        item = self._frames.pop(key, None)
        if item is not None:
            self._bytes -= item[0].nbytes

    def key_pairs(self, key: int, old_pose: np.ndarray, new_pose: np.ndarray, voxel_size: float):
        """(old voxel keys, new voxel keys) of the frame's valid pixels, distinct pairs sorted by
        old key; None when the frame's depth is not kept."""
        item = self._frames.get(key)
        if item is None:
            return None
        d, intr, stride = item
        rx = ((np.arange(0, intr.width, stride) - intr.cx) / intr.fx).astype(np.float32)
        ry = ((np.arange(0, intr.height, stride) - intr.cy) / intr.fy).astype(np.float32)
        r, c = np.nonzero(d > 0)
        z = d[r, c]
        x, y, z = (rx[c] * z).astype(np.float64), (ry[r] * z).astype(np.float64), z.astype(np.float64)

        def voxels(T):  # multiply-adds per axis: no BLAS call for 3x3 products
            return np.stack([np.floor((T[i, 0] * x + T[i, 1] * y + T[i, 2] * z + T[i, 3]) / voxel_size) for i in range(3)], axis=1).astype(np.int64)

        old, new = voxels(old_pose), voxels(new_pose)
        if not len(old) or max(np.abs(old).max(), np.abs(new).max()) > MAX_COORD - 8:
            return None
        ok, nk = pack(old), pack(new)
        order = np.lexsort((nk, ok))
        ok, nk = ok[order], nk[order]
        first = np.r_[True, (ok[1:] != ok[:-1]) | (nk[1:] != nk[:-1])]
        return ok[first], nk[first]
