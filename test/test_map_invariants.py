"""Two faults found while reading the engine, each pinned by a test that failed before its fix."""
import tracemalloc

import numpy as np

from core3d_ros.config import MapperConfig, with_overrides
from core3d_ros.core.datasets import make_scene
from core3d_ros.core.fusion.object_map import ObjectMap, ObjectState
from core3d_ros.core.fusion.voxels import pack
from core3d_ros.core.mapper import Mapper
from fusion_reference import array_vote
from test_fusion_engine import cfg, fuse, line


def test_the_frozen_copy_for_save_map_does_not_share_the_live_row_index():
    """save_map works on a frozen copy while mapping goes on. The copy must not share the live
    map's per-object row index: mapping appends rows the copy does not have, and a look-up
    through the copy would then read past its arrays and rewrite the live index."""
    scene = make_scene(seed=0, num_frames=6, width=96, height=72)
    mapper = Mapper(with_overrides(MapperConfig(), segmenter={"name": "oracle"}, keyframes={"enabled": False}, geometry={"enabled": False}))
    for i in range(3):
        mapper.process(scene[i])
    frozen, _ = mapper._frozen_map()
    live = mapper.map
    stamps, serials, anchors = frozen.keyframes.stamps.copy(), dict(frozen._serials), frozen._row_frame.copy()
    # (before the fix the copy shared live._rows itself)
    before = {oid: live.member_rows(oid).copy() for oid in live.objects}
    for i in range(3, 6):  # mapping goes on after the freeze
        mapper.process(scene[i])
    # nor the pose-correction state it saves (recorded frames, serials, anchors): fusion grew them
    assert len(live.keyframes) > len(stamps) > 0 and np.array_equal(frozen.keyframes.stamps, stamps)
    assert frozen._serials == serials and np.array_equal(frozen._row_frame, anchors)
    for oid in list(frozen.objects):
        rows = frozen.member_rows(oid)  # must neither fail nor touch the live map
        assert np.all(rows < frozen.num_voxels)
    for oid, rows in before.items():
        if oid in live.objects:
            assert np.all(np.isin(rows, live.member_rows(oid)) | (live.ids[rows] != oid).all(axis=1))


def test_the_merge_pass_allocates_by_what_it_touched_not_by_the_ids_ever_issued():
    """Ids are never reused, so after hours of mapping they run into the millions; the merge
    pass must not allocate per id ever issued (it ran a bincount of length next_id for every
    touched object)."""
    omap = ObjectMap(cfg(gamma=0.5, delta=0.3))
    a = line(0, 20)
    fuse(omap, [a])
    omap.merge_objects()
    rows = omap.lookup(pack(np.floor(a).astype(np.int64)))
    omap.next_id = 50_000_000  # as if 50 million ids had been issued (and their objects merged away)
    dup = omap.next_id
    omap.objects[dup] = ObjectState(id=dup, num_observations=1)
    omap.next_id += 1
    array_vote(omap, rows, dup)
    fuse(omap, [line(0, 3)])  # touches the duplicated voxels
    tracemalloc.start()
    try:
        merged = omap.merge_objects()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert merged == 1 and len(omap.objects) == 1
    assert peak < 1 << 20, f"merge pass allocated {peak / 2**20:.0f} MiB for a 20-voxel map"
