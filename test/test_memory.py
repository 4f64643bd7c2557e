"""Memory that follows the live map (core/fusion/storage.py): released rows and blocks, reused by
the next insert; lookups and saved maps without them; growth that never copies the map.

Hand cases with voxels of 1 (points at voxel centres): cube A fills voxels 0..3 on every axis
(64 voxels, block (0, 0, 0)), cube B voxels 8..11 in x (block (1, 0, 0)), cube C 16..19 in x
(block (2, 0, 0))."""
import numpy as np

from core3d_ros.config import FusionConfig
from core3d_ros.core.fusion import storage
from core3d_ros.core.fusion.object_map import ObjectMap
from core3d_ros.core.fusion.records import IntegrationStats
from core3d_ros.core.fusion.voxels import pack
from core3d_ros.core.mapio import load_map, save_map


def cfg(**kw):
    base = dict(voxel_size=1.0, merge_interval=0, min_object_observations=1, min_segment_voxels=1, dbscan_min_samples=1, co_mask_votes=0)
    base.update(kw)
    return FusionConfig(**base)


def cube(x0, n=4):
    """Voxel coordinates of an n^3 cube whose low corner is voxel (x0, 0, 0)."""
    g = np.stack(np.meshgrid(np.arange(n), np.arange(n), np.arange(n), indexing="ij"), axis=-1).reshape(-1, 3)
    return g + np.array([x0, 0, 0])


def fuse(omap, *parts, stamp=0.0):
    pts = np.concatenate(parts).astype(np.float32) + 0.5
    labels = np.concatenate([np.full(len(p), i + 1, np.int32) for i, p in enumerate(parts)])
    return omap.integrate_points(pts, np.full((len(pts), 3), 100, np.uint8), labels, stamp)


def keys(c):
    return pack(c.astype(np.int64))


def block_number(omap, b):
    return int(omap._blocks.find(np.array([b], np.int32))[0])


def two_cubes():
    omap = ObjectMap(cfg())
    fuse(omap, cube(0), cube(8))
    assert sorted(omap.objects) == [1, 2] and omap.num_voxels == 128 and omap.rows_used == 128
    return omap


def test_a_cleared_cube_gives_its_rows_and_block_back_and_the_next_insert_takes_them():
    omap = two_cubes()
    rows_a = omap.lookup(keys(cube(0)))
    assert sorted(rows_a.tolist()) == list(range(64))  # A was inserted first
    block_a = block_number(omap, (0, 0, 0))
    s = IntegrationStats()
    omap._clear_rows(rows_a, s)  # what free space does to voxels seen through
    assert s.removed_objects == [1] and sorted(omap.objects) == [2]
    assert 1 not in omap._rows  # the removed object's row index went with it
    assert omap.num_voxels == 64 and omap.rows_used == 128 and omap.released_rows == 64
    # Block (0, 0, 0) held only A: it left the block hash; B's block stays.
    assert block_number(omap, (0, 0, 0)) == -1 and omap.released_blocks == 1 and omap._blocks.live == 1
    assert (omap.lookup(keys(cube(0))) == -1).all()
    assert (omap.keys[rows_a] == -1).all() and (omap._btable[block_a] == -1).all()
    # C (a new block) takes A's 64 rows and A's block-table row: nothing grows.
    fuse(omap, cube(16), stamp=1.0)
    rows_c = omap.lookup(keys(cube(16)))
    assert sorted(rows_c.tolist()) == list(range(64))
    assert np.array_equal(omap.keys[rows_c], keys(cube(16)))
    assert omap.rows_used == 128 and omap.num_voxels == 128
    assert block_number(omap, (2, 0, 0)) == block_a and omap._blocks.size == 2 and omap._blocks.live == 2
    assert omap._bcount[block_a] == 64
    # A comes back: no row is free any more, so it gets rows 128..191 and a block of its own.
    fuse(omap, cube(0), stamp=2.0)
    rows_a2 = omap.lookup(keys(cube(0)))
    assert sorted(rows_a2.tolist()) == list(range(128, 192))
    assert block_number(omap, (0, 0, 0)) == 2 and omap._blocks.size == 3
    snap = {o.id: len(o.points) for o in omap.snapshot().objects}
    assert sorted(snap.values()) == [64, 64, 64]


def test_a_partly_cleared_block_keeps_its_other_voxels_and_never_returns_a_freed_row():
    omap = ObjectMap(cfg(free_object_fraction=1.0))  # an object is removed only when it has no voxel left
    fuse(omap, cube(0), cube(8))
    first_half = cube(0)[:32]  # x = 0 and 1
    rows = omap.lookup(keys(first_half))
    omap._clear_rows(rows, IntegrationStats())
    assert 1 in omap.objects and omap.objects[1].num_voxels == 32
    b = block_number(omap, (0, 0, 0))
    assert b >= 0 and omap._bcount[b] == 32
    assert (omap.lookup(keys(first_half)) == -1).all()
    assert (omap.lookup(keys(cube(0)[32:])) >= 0).all()
    # The freed rows go to new voxels of B's block (x = 12, outside B): the cleared keys stay absent.
    extra = cube(12)[:16]  # x = 12, y 0..3, z 0..3: 16 voxels in block (1, 0, 0)
    fuse(omap, extra, stamp=1.0)
    got = omap.lookup(keys(extra))
    assert set(got.tolist()) <= set(rows.tolist()) and len(set(got.tolist())) == 16
    assert (omap.lookup(keys(first_half)) == -1).all()
    assert omap.rows_used == 128 and omap.num_voxels == 32 + 64 + 16


def test_removing_an_object_releases_the_rows_it_alone_held():
    from core3d_ros.core.fusion.records import ObjectState

    omap = two_cubes()
    # Object 3 also holds A's first layer (x = 0): those 16 rows hold two ids.
    layer = omap.lookup(keys(cube(0)[:16]))
    omap.objects[3] = ObjectState(id=3, num_observations=1)
    omap.next_id = 4
    omap._vote(layer, np.full(16, 3, np.int32), np.zeros((16, 3), np.uint8))
    assert ((omap.ids[layer] >= 0).sum(axis=1) == 2).all() and omap.objects[3].num_voxels == 16
    omap._remove_object(1)
    omap._drop_empty()
    assert 1 not in omap.objects and 1 not in omap._rows
    # The 48 rows A alone held are released; the 16 shared ones stay, now owned by 3.
    assert omap.num_voxels == 128 - 48 and omap.released_rows == 48
    assert (omap.lookup(keys(cube(0)[16:])) == -1).all()
    assert np.array_equal(omap.lookup(keys(cube(0)[:16])), layer)
    assert (omap.owner[layer] == 3).all()
    assert block_number(omap, (0, 0, 0)) >= 0  # 16 voxels left in it


def test_a_saved_map_holds_live_voxels_only_and_round_trips(tmp_path):
    omap = two_cubes()
    omap._clear_rows(omap.lookup(keys(cube(0))), IntegrationStats())
    path = save_map(omap, tmp_path / "m.npz")
    with np.load(path, allow_pickle=False) as d:
        assert len(d["keys"]) == 64 and (d["keys"] >= 0).all()
        assert np.array_equal(np.sort(d["keys"]), np.sort(keys(cube(8))))
    loaded = load_map(path, cfg())
    assert loaded.num_voxels == 64 and loaded.rows_used == 64
    assert (loaded.lookup(keys(cube(0))) == -1).all()
    rows = loaded.lookup(keys(cube(8)))
    assert sorted(rows.tolist()) == list(range(64))
    a, b = omap.snapshot(), loaded.snapshot()
    assert [o.id for o in a.objects] == [o.id for o in b.objects] == [2]
    assert np.array_equal(np.sort(a.objects[0].points, axis=0), np.sort(b.objects[0].points, axis=0))
    # The loaded map takes new voxels as usual, in a fresh block.
    fuse(loaded, cube(16), stamp=3.0)
    assert loaded.num_voxels == 128


def test_an_object_that_keeps_losing_and_regaining_rows_keeps_its_index_small():
    omap = ObjectMap(cfg(free_object_fraction=1.0))
    big = cube(0, n=8)  # 512 voxels, one block
    fuse(omap, big)
    (oid,) = omap.objects
    for lap in range(20):
        rows = omap.lookup(keys(big[:256]))
        omap._clear_rows(rows, IntegrationStats())  # half of it: the object stays
        if oid not in omap.objects:
            break
        fuse(omap, big, stamp=float(lap + 1))
    assert oid in omap.objects, "the object should survive half-clearing"
    st, idx = omap.objects[oid], omap._rows[oid]
    assert st.num_voxels == 512 and omap.rows_used == 512
    # Without compaction the index would hold 512 + 20 * 256 rows.
    assert sum(len(c) for c in idx.chunks) <= 2 * 512 + 256 + 256


def test_growth_initialises_chunks_of_the_reservation_and_never_copies():
    omap = ObjectMap(cfg())
    arrays = {name: getattr(omap, name) for name in ("keys", "ids", "hits", "colors", "owner", "free", "_btable")}
    plane = np.stack(np.meshgrid(np.arange(200), np.arange(200), [0], indexing="ij"), axis=-1).reshape(-1, 3)
    fuse(omap, plane)  # 40 000 voxels in 625 blocks
    assert omap.num_voxels == 40_000
    assert all(getattr(omap, name) is a for name, a in arrays.items())
    chunk = storage.ROW_CHUNK
    assert 40_000 <= omap._rows_init <= 40_000 + chunk  # the rows reached, at most a chunk ahead
    assert omap._blocks_init == storage.BLOCK_CHUNK
    assert (omap.owner[40_000 : omap._rows_init] == -1).all() and (omap.keys[40_000 : omap._rows_init] == -1).all()
    # memory_bytes counts what was written, not the reservation.
    assert omap.memory_bytes() < 2 * (omap._rows_init * 60 + storage.BLOCK_CHUNK * 2052) + 2**20


def test_memory_bytes_count_the_snapshot_summaries():
    """The snapshot summaries are the map's memory too (core/fusion/snapshot.py). Once rows are
    marked, per row 1 + 4 + 4 bytes (marked, owner, position) for at least 2**15 rows; a snapshot
    then gives each cube its rows (int32), centres (3 float32) and colours (3 uint8): 19 bytes
    for each of its 64 voxels (no up vector: no outline grid)."""
    omap = two_cubes()
    store = storage.VoxelStore.memory_bytes(omap) + omap.corrections_memory_bytes()
    assert omap.memory_bytes() == store + 2**15 * 9
    omap.snapshot()
    assert storage.VoxelStore.memory_bytes(omap) + omap.corrections_memory_bytes() == store  # no storage written
    assert omap.memory_bytes() == store + 2**15 * 9 + 2 * 64 * 19
    assert omap.memory_report()["held_bytes"] == omap.memory_bytes()


def test_past_its_reservation_the_map_doubles_with_a_copy():
    small = cfg(max_voxels=100)
    c = cube(0, n=8)[:300]
    k = keys(c)
    ids = np.full((300, 4), -1, np.int32)
    ids[:, 0] = 1
    hits = np.zeros((300, 4), np.int32)
    hits[:, 0] = 1
    from core3d_ros.core.fusion.records import ObjectState

    omap = ObjectMap.from_arrays(small, k, ids, hits, np.zeros((300, 3), np.float32), np.ones(300, np.int32), [ObjectState(id=1, num_observations=1)], 2, 1)
    assert omap.num_voxels == 300 and len(omap.keys) >= 300
    assert np.array_equal(omap.lookup(k), np.arange(300))


def test_a_box_taken_away_and_put_back_each_lap_reuses_its_rows():
    """The free-space scene of test_free_space: 3 frames see through the box's voxels and clear
    them; 3 frames with the box put it back. Rows in use stop growing after the first lap (its
    growth: the wall the box hid)."""
    from test_free_space import box_and_wall, frame, mapped
    from test_free_space import fuse as fuse_depth

    omap = mapped()
    box, _ = box_and_wall(omap)
    n_box = omap.objects[box].num_voxels
    used, live, released = [], [], []
    for lap in range(4):
        for i in range(3):
            fuse_depth(omap, *frame(box=False), stamp=10.0 * lap + i)
        live.append(omap.num_voxels)
        released.append(omap.released_rows)
        for i in range(3):
            fuse_depth(omap, *frame(box=True), stamp=10.0 * lap + 5 + i)
        used.append(omap.rows_used)
    assert released == [n_box * (k + 1) for k in range(4)]  # each lap the box's rows came back
    assert used[1] == used[2] == used[3] and live[1] == live[2] == live[3]
    assert omap.rows_used - omap.num_voxels == omap._n_free


def test_soak_with_change_rows_in_use_stop_growing_while_the_room_keeps_changing():
    """`core3d bench soak --change`, short: 6 laps of 30 frames; the sofa leaves on odd laps and
    comes back on even ones, the chair stands at another place each lap. After 3 warm-up laps
    the live map still swings by the sofa each lap, but the rows in use stay where they are:
    every lap's freed rows are taken by the next lap's new voxels."""
    from core3d_ros.tools.bench.soak import bench_soak_change

    r = bench_soak_change(laps=6, frames=30, warmup=3, width=160, height=120)
    laps = r["per_lap"]
    assert [lap["removed"] for lap in laps] == [[], ["sofa"], [], ["sofa"], [], ["sofa"]]
    after = laps[3:]
    assert after[0]["rows_used"] == after[1]["rows_used"] == after[2]["rows_used"]
    assert after[1]["live_voxels"] - after[0]["live_voxels"] > 3000  # the sofa (and chair) back
    released = [lap["released_rows"] for lap in laps]
    given = [b - a for a, b in zip(released[2:], released[3:])]  # rows given back in laps 3, 4, 5
    assert given[0] > 3000 and given[2] > 3000  # the sofa (and the chair's old place)
    assert given[1] > 300  # the chair's old place
    assert r["rows_used_growth_after_warmup"] == 0
    # rows in use are the peak of the live voxels: at most the live ones plus the free ones
    assert all(lap["rows_used"] == lap["live_voxels"] + lap["free_rows"] for lap in laps)
    assert r["per_lap"][-1]["held_bytes"] >= r["per_lap"][-1]["live_bytes"] > 0


# ------------------------------------------------------------------ byte budgets of what is kept


def _frame(stamp, h=10, w=10):
    from core3d_ros.core.camera import CameraIntrinsics
    from core3d_ros.core.frame import Frame

    intr = CameraIntrinsics(width=w, height=h, fx=10.0, fy=10.0, cx=w / 2, cy=h / 2)
    return Frame(rgb=np.zeros((h, w, 3), np.uint8), depth=np.ones((h, w), np.float32), intrinsics=intr, pose=np.eye(4), stamp=stamp)


def test_the_frame_buffer_keeps_within_its_bytes_oldest_unpinned_first():
    from core3d_ros.core.mapping.framebuffer import FrameBuffer, frame_bytes

    assert frame_bytes(_frame(0.0)) == 300 + 400  # colour 10x10x3 bytes, depth 10x10 float32
    buf = FrameBuffer(capacity=10, max_pinned=2, max_bytes=2000)  # two frames fit, not three
    for t in (0.0, 1.0):
        buf.add(_frame(t))
    assert len(buf) == 2 and buf.bytes == 1400 and buf.evicted_for_bytes == 0
    buf.add(_frame(2.0))
    assert len(buf) == 2 and buf.bytes == 1400 and buf.evicted_for_bytes == 1
    assert buf.take(0.0) == (None, "late") and buf.take(1.0)[0] is not None
    # A pinned frame stays beyond the budget; the unpinned ones give way, the newest always stays.
    assert buf.pin(1.0)
    buf.add(_frame(3.0))
    buf.add(_frame(4.0))
    assert buf.take(1.0)[0] is not None  # pinned: kept
    assert buf.take(2.0) == (None, "late") and buf.take(3.0) == (None, "late")
    assert buf.evicted_for_bytes == 3 and buf.newest() == 4.0
    # One frame larger than the whole budget is kept (the newest): nothing to fuse otherwise.
    big = FrameBuffer(capacity=10, max_bytes=100)
    big.add(_frame(0.0))
    assert len(big) == 1 and big.evicted_for_bytes == 0


def test_best_views_beyond_the_budget_leave_from_the_objects_seen_longest_ago():
    from core3d_ros.core.fusion.records import SegmentObservation

    # Views of 10x10x3 = 300 bytes; a budget of 1000 bytes holds three.
    omap = ObjectMap(cfg(best_view_budget_mb=1000 / 2**20))
    for k in range(4):  # object k seen at time k, with a view of quality 0.5
        obs = [SegmentObservation(view_quality=0.5, view_crop=np.full((10, 10, 3), k, np.uint8))]
        pts = cube(8 * k).astype(np.float32) + 0.5
        omap.integrate_points(pts, np.full((len(pts), 3), 100, np.uint8), np.ones(len(pts), np.int32), float(k), obs)
    views = {oid: st.best_view for oid, st in omap.objects.items()}
    # 4 x 300 = 1200 > 1000: the object seen first (time 0) loses its view; 900 <= 0.9 x 1000 remain.
    assert omap.views_evicted == 1
    assert views[1] is None and all(views[o] is not None for o in (2, 3, 4))
    assert omap.objects[1].best_view_quality == -1.0  # it takes the next view it is seen in
    assert omap.memory_report()["views_evicted"] == 1
    obs = [SegmentObservation(view_quality=0.1, view_crop=np.full((10, 10, 3), 9, np.uint8))]
    pts = cube(0).astype(np.float32) + 0.5
    omap.integrate_points(pts, np.full((len(pts), 3), 100, np.uint8), np.ones(len(pts), np.int32), 5.0, obs)
    # Object 1 has a view again; now object 2 (seen at time 1) is the one seen longest ago.
    assert omap.objects[1].best_view is not None and omap.objects[2].best_view is None
    assert omap.views_evicted == 2


def test_budgets_are_validated_at_start_up():
    import pytest

    from core3d_ros.config import ConfigError, from_dict

    with pytest.raises(ConfigError, match="fusion.best_view_budget_mb"):
        from_dict({"fusion": {"best_view_budget_mb": -1.0}})
    with pytest.raises(ConfigError, match="ros.frame_buffer_mb"):
        from_dict({"ros": {"frame_buffer_mb": 0.0}})


def test_the_mapper_saves_the_live_voxels_of_a_map_with_released_rows(tmp_path):
    """Mapper.save copies the rows handed out (live and free) under its lock and the file keeps
    the live ones: a freed row between live ones is left out, the rest round-trips."""
    from core3d_ros.config import MapperConfig, with_overrides
    from core3d_ros.core.mapper import Mapper

    mapper = Mapper(with_overrides(MapperConfig(fusion=cfg()), geometry={"enabled": False}), segment=False)
    omap = mapper.map
    fuse(omap, cube(0), cube(8), cube(16))  # rows 0..63 A, 64..127 B, 128..191 C
    omap._clear_rows(omap.lookup(keys(cube(8))), IntegrationStats())  # B: the middle rows
    assert omap.num_voxels == 128 and omap.rows_used == 192
    path = mapper.save(str(tmp_path / "m.npz"))
    loaded = load_map(path, cfg())
    assert loaded.num_voxels == 128
    assert (loaded.lookup(keys(cube(8))) == -1).all()
    assert (loaded.lookup(keys(np.concatenate([cube(0), cube(16)]))) >= 0).all()


def test_a_merged_away_object_leaves_no_state_behind():
    omap = two_cubes()
    omap.objects[2].add_embedding(np.ones(4, np.float32))
    omap.objects[2].best_view, omap.objects[2].best_view_quality = np.zeros((4, 4, 3), np.uint8), 0.5
    omap._pair_votes = {1: {2: [1, 0]}, 2: {1: [1, 0]}}
    omap._pair_votes[1][2] = omap._pair_votes[2][1]
    omap._merge_pair(1, 2)
    assert sorted(omap.objects) == [1] and sorted(omap._rows) == [1] and 2 not in omap._pair_votes
    assert omap.objects[1].num_voxels == 128 and omap.objects[1].best_view is not None  # what it had passed on
    assert omap.num_voxels == 128 and omap.released_rows == 0  # every voxel still held (by 1)


def test_a_map_file_with_voxels_no_object_holds_loads_without_them(tmp_path):
    omap = two_cubes()
    path = save_map(omap, tmp_path / "m.npz")
    with np.load(path, allow_pickle=False) as d:
        arrays = {k: d[k] for k in d.files}
    # An older file may hold rows whose slots are all empty: the first 10 rows of A here.
    arrays["ids"][:10] = -1
    arrays["hits"][:10] = 0
    arrays["obj_num_voxels"][arrays["obj_id"] == 1] -= 10
    with open(tmp_path / "old.npz", "wb") as f:
        np.savez(f, **arrays)
    loaded = load_map(tmp_path / "old.npz", cfg())
    assert loaded.num_voxels == 118 and loaded.rows_used == 128 and loaded._n_free == 10
    assert (loaded.lookup(arrays["keys"][:10]) == -1).all()
    fuse(loaded, cube(16), stamp=5.0)  # the next voxels take those 10 rows first
    assert loaded.rows_used == 128 + 54


def test_block_numbers_gathered_on_the_device_match_the_host_view():
    """The path a CUDA block hash takes (gather the asked blocks on the device, copy only them),
    run on the CPU against the numpy view; erased blocks are absent and their numbers reused."""
    from core3d_ros.core.fusion.blocks import BlockHash

    h = BlockHash("cpu", capacity=1 << 12)
    blocks = np.stack([np.arange(1000), np.zeros(1000), np.zeros(1000)], axis=1).astype(np.int32)
    assert np.array_equal(h.insert(blocks), np.arange(1000))
    h.erase(blocks[10:20], np.arange(10, 20))
    assert h.live == 990 and h.size == 1000
    query = np.concatenate([blocks[::3], blocks[:5] + 5000]).astype(np.int32)
    want = np.where((np.arange(0, 1000, 3) >= 10) & (np.arange(0, 1000, 3) < 20), -1, np.arange(0, 1000, 3))
    host = h.find(query)
    h._host_view = False
    device = h.find(query)
    assert np.array_equal(host, np.r_[want, [-1] * 5]) and np.array_equal(device, host)
    again = h.insert(blocks[10:13])  # erased numbers come back first
    assert sorted(again.tolist()) == [17, 18, 19] and h.size == 1000 and h.live == 993


def test_rows_kept_for_the_merge_pass_stay_bounded_without_passes():
    # merge_interval 0: nobody runs the pass, yet every frame notes the rows it touched. The
    # list folds into its distinct rows once it holds more than 4x the map's rows (or 1 M).
    omap = ObjectMap(cfg(merge_interval=0))
    frame_rows = np.arange(1000, dtype=np.int64)
    for _ in range(2000):  # 2,000,000 rows noted, 1,000 distinct
        omap._note_touched(frame_rows)
    assert omap._merge_touched_n <= (1 << 20) + len(frame_rows)
    assert np.array_equal(np.unique(np.concatenate(omap._merge_touched)), frame_rows)
    omap.merge_objects()
    assert omap._merge_touched == [] and omap._merge_touched_n == 0
