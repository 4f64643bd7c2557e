"""The map mirror (core/mapping/mirror.py): applying a versioned map stream, ROS-free."""
from __future__ import annotations

import numpy as np
import pytest

from core3d_ros.core.mapping.mirror import MapMirror, MapVersion, StreamedObject
from core3d_ros.core.objects import OrientedBox

MAP = "/core3d_mapping"


def obj(oid: int, dim: int = 4, x: float = 0.0) -> StreamedObject:
    pts = (np.random.default_rng(oid).normal(size=(10, 3)) * 0.05 + [oid + x, 0, 1]).astype(np.float32)
    emb = np.ones(dim, np.float32) / np.sqrt(dim) if dim else None
    return StreamedObject(
        id=oid, points=pts, colors=np.full((10, 3), 100, np.uint8), box=OrientedBox.from_points(pts),
        num_observations=2, first_seen=1.0, last_seen=2.0, embedding=emb, label="mug",
        full_centroid=pts.mean(axis=0), full_num_voxels=500, full_mean_color=np.array([0.4, 0.4, 0.4]),
    )


def change(seq: int, objs=(), removed=(), gen: int = 1, map_id: str = MAP) -> MapVersion:
    return MapVersion(map_id, gen, seq, False, objects=list(objs), removed=list(removed))


def state(seq: int, objs=(), gen: int = 1, map_id: str = MAP) -> MapVersion:
    return MapVersion(map_id, gen, seq, True, objects=list(objs))


def ids(m: MapMirror) -> list[int]:
    snap = m.snapshot()
    assert snap is not None
    return [o.id for o in snap.objects]


def started(seq: int = 0, objs=()) -> MapMirror:
    m = MapMirror()
    assert m.needs_state and m.snapshot() is None  # no map yet
    assert m.apply_state(state(seq, objs)) == "applied"
    assert not m.needs_state
    return m


def test_changes_apply_in_sequence() -> None:
    m = started(0)
    assert ids(m) == []
    assert m.offer(change(1, [obj(2), obj(1)])) == "applied"
    assert ids(m) == [1, 2]
    assert m.offer(change(2, [obj(1, x=5.0)], removed=[2])) == "applied"
    assert ids(m) == [1]
    snap = m.snapshot()
    assert snap.objects[0].centroid[0] == pytest.approx(6.0, abs=0.1)
    assert snap.objects[0].num_voxels == 500  # the mapping node's count, not the sample's
    s = m.stats()
    assert (s.seq, s.applied, s.states, s.objects, s.rejected) == (2, 2, 1, 1, {})
    assert s.age_s is not None and s.age_s >= 0


def test_changes_before_the_first_state_wait_for_it() -> None:
    m = MapMirror()
    assert m.offer(change(3, [obj(1)])) == "waiting"
    assert m.offer(change(4, [obj(2)])) == "waiting"
    assert m.snapshot() is None and m.needs_state
    assert m.apply_state(state(3, [obj(1)])) == "applied"  # covers 3; 4 follows it
    assert ids(m) == [1, 2] and m.stats().seq == 4 and not m.needs_state


def test_a_gap_asks_for_a_state_and_resumes_after_it() -> None:
    m = started(0)
    m.offer(change(1, [obj(1)]))
    assert m.offer(change(3, [obj(3)])) == "waiting"  # 2 was lost
    assert m.needs_state and ids(m) == [1]  # the table is unchanged meanwhile
    assert m.stats().resyncs == {"first": 1, "gap": 1}
    assert m.offer(change(4, [obj(4)])) == "waiting"
    assert m.apply_state(state(3, [obj(1), obj(2), obj(3)])) == "applied"
    assert ids(m) == [1, 2, 3, 4] and m.stats().seq == 4 and not m.needs_state


def test_the_missing_change_arriving_late_closes_the_gap() -> None:
    m = started(0)
    m.offer(change(2, [obj(2)]))
    assert m.needs_state
    assert m.offer(change(1, [obj(1)])) == "applied"
    assert ids(m) == [1, 2]
    assert m.apply_state(state(1, [obj(1)])) == "stale"  # older than the table: ignored
    assert ids(m) == [1, 2] and not m.needs_state


@pytest.mark.parametrize(
    "bad, reason",
    [
        (change(1, [obj(9)]), "duplicate"),
        (change(0, [obj(9)]), "out_of_order"),
        (change(2, [obj(9)], gen=0), "unknown_generation"),
        (change(2, [obj(9)], map_id="/other"), "unknown_map"),
        (change(2, [obj(9, dim=8)]), "embedding_size"),
    ],
)
def test_bad_updates_are_counted_by_reason_and_never_applied(bad: MapVersion, reason: str) -> None:
    m = started(0)
    m.offer(change(1, [obj(1)]))
    before = m.snapshot()
    assert m.offer(bad) == reason
    assert m.stats().rejected == {reason: 1}
    assert m.snapshot() is before and ids(m) == [1] and m.stats().seq == 1


@pytest.mark.parametrize("field", ["center", "extent", "rotation", "centroid"])
def test_nan_boxes_are_refused(field: str) -> None:
    m = started(0)
    o = obj(5)
    if field == "centroid":
        o.full_centroid = np.array([np.nan, 0, 0])
    else:
        getattr(o.box, field)[0] = np.nan
    assert m.offer(change(1, [o])) == "nan_box"
    assert m.apply_state(state(7, [o])) == "nan_box"
    assert ids(m) == [] and m.stats().rejected == {"nan_box": 2}


def test_malformed_samples_and_nan_embeddings_are_refused() -> None:
    m = started(0, [obj(1)])
    o = obj(2)
    o.colors = o.colors[:3]
    assert m.offer(change(1, [o])) == "malformed_sample"
    o = obj(3)
    o.embedding = np.full(4, np.nan, np.float32)
    assert m.offer(change(1, [o])) == "nan_embedding"
    assert ids(m) == [1]


def test_a_new_generation_replaces_the_table() -> None:
    m = started(0)
    m.offer(change(1, [obj(1), obj(2)]))
    assert m.offer(change(1, [obj(7)], gen=2)) == "waiting"  # a restarted mapper
    assert m.needs_state and m.stats().resyncs.get("new_generation") == 1
    assert m.apply_state(state(1, [obj(7)], gen=2)) == "applied"
    assert ids(m) == [7] and m.stats().generation == 2
    assert m.offer(change(5, [obj(8)], gen=1)) == "unknown_generation"  # the old mapper's


def test_the_pending_buffer_is_bounded() -> None:
    m = MapMirror(max_pending=3)
    for seq in range(1, 6):
        m.offer(change(seq, [obj(seq)]))
    s = m.stats()
    assert s.pending == 3 and s.rejected == {"pending_overflow": 2}


def test_a_change_newer_than_the_state_asked_after_it_is_dropped() -> None:
    m = started(0)
    m.offer(change(1, [obj(1)]))
    assert m.offer(change(9, [obj(9)])) == "waiting"  # forged or stray: the map is at 1
    mark = m.mark()
    assert m.offer(change(3, [obj(3)])) == "waiting"  # arrived after the request: kept
    assert m.apply_state(state(2, [obj(1), obj(2)]), mark) == "applied"
    assert ids(m) == [1, 2, 3] and m.stats().seq == 3
    assert m.stats().rejected == {"ahead_of_state": 1} and not m.needs_state
    m.offer(change(5, [obj(5)]))  # a real gap
    mark = m.mark()
    assert m.apply_state(state(3, [obj(1), obj(2), obj(3)]), mark) == "stale"
    assert not m.needs_state and m.stats().rejected == {"ahead_of_state": 2}
