"""Merging objects that are one thing, a part of :class:`.object_map.ObjectMap`:

- the merge pass (every ``merge_interval`` frames): pairs of objects that share voxels touched
  since the last pass, tested with the balanced IoV test on their full voxel sets; it costs what
  was touched, never the whole map (nor the ids ever issued); after a pose correction, also the
  pairs that the move made share most of the smaller one's voxels (``merge_objects(moved)``);
- co-mask evidence: objects seen inside one 2-D mask more often than in different masks of one
  frame;
- the unions that association found (a segment covering two objects; a hidden side).

A merged-away id resolves to its survivor for the rest of the frame (``_resolve``).
"""
from __future__ import annotations

import numpy as np

from .association import balanced
from .map_kernels import pair_codes_kernel


class Merging:
    """Merges of objects (a part of :class:`.object_map.ObjectMap`)."""

    def _note_touched(self, rows: np.ndarray) -> None:
        """Remember rows for the next merge pass. Without passes (``merge_interval`` 0, or a
        caller that merges by hand rarely) the list is folded into its distinct rows whenever it
        holds more than four times the map's rows (or 1 M), so it stays bounded by the map, not the
        history (a pass every ``merge_interval`` frames normally empties it long before)."""
        self._merge_touched.append(rows)
        self._merge_touched_n += len(rows)
        if self._merge_touched_n > max(4 * self._n, 1 << 20):
            folded = np.unique(np.concatenate(self._merge_touched))
            self._merge_touched, self._merge_touched_n = [folded], len(folded)

    def pair_counts(self, objects) -> tuple[np.ndarray, np.ndarray]:
        """(pair codes, shared rows) of every pair of objects that share a voxel with one of
        ``objects`` (exact for any pair holding one of them); costs those objects' rows."""
        objects = [o for o in objects if o in self.objects]
        if not objects:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        rows = np.unique(np.concatenate([self.member_rows(o) for o in objects]))
        codes, counts = np.unique(pair_codes_kernel(rows, self.ids), return_counts=True)
        return codes, counts.astype(np.int64)

    def merge_objects(self, moved=None) -> int:
        """Merge pairs of objects that share voxels touched since the last pass and pass the
        balanced IoV test on their full voxel sets. Costs what was touched, not the map.

        ``moved`` (after a pose correction): (the objects that moved, and :meth:`pair_counts` of
        them before the move). A pair holding a moved object also merges when the move made the
        smaller one's voxels shared with the other: rows shared after minus rows shared before,
        over the smaller's voxels, above gamma. Those are pieces of one surface that the drift
        had kept apart (a duplicate made where the drifted view did not match the map); objects
        that already shared their rows before the move (a book on the table a mask covered
        with it) gained nothing from it and are tested as before."""
        touched = self._merge_touched
        self._merge_touched, self._merge_touched_n = [], 0
        if not touched:
            return 0
        rows = np.concatenate(touched)  # duplicates only repeat pair codes, removed below
        codes = np.unique(pair_codes_kernel(rows, self.ids))  # one pass over the rows, no (rows, K) temporaries
        if len(codes) == 0:
            return 0
        a_ids, b_ids = codes >> 32, codes & 0xFFFFFFFF
        # Sizes by position among the ids present (never a table as long as the ids ever issued).
        present = np.unique(np.concatenate([a_ids, b_ids]))
        size = np.array([self.objects[o].num_voxels if o in self.objects else 0 for o in present.tolist()], np.float64)
        sa, sb = size[np.searchsorted(present, a_ids)], size[np.searchsorted(present, b_ids)]
        # A pair can only pass the balanced test if the smaller holds more than gamma of the larger.
        keep = (np.minimum(sa, sb) > self.cfg.gamma * np.maximum(sa, sb)) & (np.minimum(sa, sb) > 0)
        before = np.zeros(len(codes), np.float64)
        moved_pair = np.zeros(len(codes), bool)
        if moved is not None:
            moved_ids, pre_codes, pre_counts = moved
            moved_ids = np.asarray(moved_ids, np.int64)
            moved_pair = (np.isin(a_ids, moved_ids) | np.isin(b_ids, moved_ids)) & (np.minimum(sa, sb) > 0)
            if len(pre_codes):
                at = np.minimum(np.searchsorted(pre_codes, codes), len(pre_codes) - 1)
                before = np.where(pre_codes[at] == codes, pre_counts[at], 0).astype(np.float64)
            keep |= moved_pair
        a_ids, b_ids, sa, sb, before, moved_pair = a_ids[keep], b_ids[keep], sa[keep], sb[keep], before[keep], moved_pair[keep]
        if len(a_ids) == 0:
            return 0
        # Exact |A ∩ B|: scan the rows of the smaller object of each pair (once per object),
        # counting its partners' ids there.
        small = np.where(sa <= sb, a_ids, b_ids)
        other = np.where(sa <= sb, b_ids, a_ids)
        inter = np.zeros(len(a_ids), np.float64)
        order = np.argsort(small, kind="stable")
        starts = np.flatnonzero(np.r_[True, small[order][1:] != small[order][:-1]])
        ends = np.append(starts[1:], len(order))
        for s0, e0 in zip(starts.tolist(), ends.tolist()):
            idx = order[s0:e0]
            o = int(small[idx[0]])
            ids_o = self.ids[self.member_rows(o)]
            seen, counts = np.unique(ids_o[ids_o >= 0], return_counts=True)  # the object's size, not next_id
            at = np.minimum(np.searchsorted(seen, other[idx]), len(seen) - 1)
            inter[idx] = np.where(seen[at] == other[idx], counts[at], 0)
        iov_ab, iov_ba = inter / np.maximum(sa, 1), inter / np.maximum(sb, 1)
        ok = balanced(iov_ab, iov_ba, self.cfg.gamma, self.cfg.delta) & (np.minimum(sa, sb) > self.cfg.gamma * np.maximum(sa, sb))
        gained = moved_pair & ((inter - before) > self.cfg.gamma * np.minimum(sa, sb))
        ok |= gained
        iov_ab, iov_ba = np.where(gained, 1.0, iov_ab), np.where(gained, 1.0, iov_ba)  # gained pairs first
        cand = [(float(min(x, y)), int(a), int(b)) for x, y, a, b in zip(iov_ab[ok], iov_ba[ok], a_ids[ok], b_ids[ok])]
        cand.sort(key=lambda c: -c[0])
        alias: dict[int, int] = {}

        def root(x: int) -> int:
            while x in alias:
                x = alias[x]
            return x

        merged = 0
        for _, x, y in cand:
            x, y = root(x), root(y)
            if x == y:
                continue
            keep, gone = (x, y) if self.objects[x].num_voxels >= self.objects[y].num_voxels else (y, x)
            self._merge_pair(keep, gone)
            alias[gone] = keep
            merged += 1
        if merged:
            self.version += 1
        return merged

    def _merge_pair(self, keep: int, gone: int) -> None:
        """``gone``'s voxels, hits, observations, embedding and best view pass to ``keep``."""
        rows = self.member_rows(gone)
        slots = (self.ids[rows] == gone).argmax(axis=1)
        has_keep = (self.ids[rows] == keep).any(axis=1)
        # Rows holding both: fold the hits into keep's slot and free gone's slot.
        r, s = rows[has_keep], slots[has_keep]
        keep_slot = (self.ids[r] == keep).argmax(axis=1)
        self.hits[r, keep_slot] += self.hits[r, s]
        self.ids[r, s] = -1
        self.hits[r, s] = 0
        # Rows holding only gone: relabel.
        only = rows[~has_keep]
        self.ids[only, slots[~has_keep]] = keep
        k, g = self.objects[keep], self.objects.pop(gone)
        self._rows.pop(gone, None)
        self._alias[gone] = keep
        if self._pair_votes:
            self._fold_votes(keep, gone)
        self._give_rows(keep, np.sort(only))
        k.num_observations += g.num_observations
        k.first_seen = min(k.first_seen, g.first_seen)
        k.last_seen = max(k.last_seen, g.last_seen)
        if g.embedding_sum is not None:
            k.add_embedding(g.embedding_sum / max(g.embedding_weight, 1e-9), g.embedding_weight)
        if g.best_view_quality > k.best_view_quality:
            k.best_view_quality, k.best_view = g.best_view_quality, g.best_view
        self._dirty.update((keep, gone))
        self._update_owner(rows)
        self.version += 1

    def _merge_unions(self) -> int:
        """Merge the groups that association found to be one thing (``_unions``: survivor first);
        returns the merges."""
        merged = 0
        for group in self._unions:
            for gone in group[1:]:
                keep = group[0]
                if gone in self.objects and keep in self.objects and gone != keep:
                    self._merge_pair(keep, gone)
                    merged += 1
        return merged

    def _co_mask_evidence(self, targets: np.ndarray, seg_label: np.ndarray) -> int:
        """Objects seen inside one 2-D mask are evidence of one thing; objects seen in different
        masks of the same frame, evidence of two. Pieces of one object that the map holds apart
        (parts cut by an occluder, legs first seen without their top) are merged once they have
        been seen together in ``co_mask_votes`` frames and more often together than apart.
        The cost follows the frame's objects: (objects seen in the frame)^2 pairs."""
        per_mask: dict[int, set[int]] = {}
        for t, m in zip(targets.tolist(), seg_label.tolist()):
            per_mask.setdefault(m, set()).add(t)
        votes = self._pair_votes
        together: set[tuple[int, int]] = set()
        for g in per_mask.values():
            g = sorted(g)
            for i in range(len(g)):
                for j in range(i + 1, len(g)):
                    together.add((g[i], g[j]))
        seen = {t for g in per_mask.values() for t in g}
        seen_sorted = sorted(seen)
        for i, a in enumerate(seen_sorted):
            row = votes.setdefault(a, {})
            for b in seen_sorted[i + 1 :]:
                v = row.get(b)
                if v is None:
                    v = [0, 0]
                    row[b] = v
                    votes.setdefault(b, {})[a] = v
                v[0 if (a, b) in together else 1] += 1
        merged = 0
        for a, b in sorted(together):
            a, b = self._resolve(a), self._resolve(b)
            if a == b or a not in self.objects or b not in self.objects:
                continue
            t, apart = votes.get(a, {}).get(b, (0, 0))
            if t >= self.cfg.co_mask_votes and t > apart:
                keep, gone = (a, b) if self.objects[a].num_voxels >= self.objects[b].num_voxels else (b, a)
                self._merge_pair(keep, gone)
                merged += 1
        return merged

    def _fold_votes(self, keep: int, gone: int) -> None:
        """Pair evidence of a merged-away object passes to its survivor (costs its pairs)."""
        votes = self._pair_votes
        for b, v in votes.pop(gone, {}).items():
            other = votes.get(b)
            if other is not None:
                other.pop(gone, None)
            if b == keep:
                continue
            w = votes.setdefault(keep, {}).get(b)
            if w is None:
                votes[keep][b] = v
                votes.setdefault(b, {})[keep] = v
            else:
                w[0], w[1] = max(w[0], v[0]), max(w[1], v[1])

    def _resolve(self, oid: int) -> int:
        while oid not in self.objects and oid in self._alias:
            oid = self._alias[oid]
        return oid
