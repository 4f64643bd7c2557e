"""Map files: round trip, atomic writes, and damaged or hostile files rejected cleanly."""
import io
import zipfile

import numpy as np
import pytest

from core3d_ros.config import FusionConfig
from core3d_ros.core.fusion.object_map import ObjectMap
from core3d_ros.core.mapio import MapFileError, load_map, save_map
from test_fusion import box_surface, cfg, integrate


@pytest.fixture
def omap():
    m = ObjectMap(cfg())
    a = box_surface([0, 0, 0], [0.4, 0.4, 0.4])
    b = box_surface([1.0, 0, 0], [1.6, 0.4, 0.4])
    for t in range(3):
        integrate(m, [a, b], stamp=float(t))
    st = next(iter(m.objects.values()))
    st.add_embedding(np.array([1, 0, 0, 0], np.float32))
    st.best_view, st.best_view_quality = np.full((4, 5, 3), 7, np.uint8), 0.8
    st.moved_from, st.moved_at = np.array([1.0, -2.0, 0.5]), 3.5  # seen to move (moves.py)
    return m


def test_round_trip(tmp_path, omap):
    path = save_map(omap, tmp_path / "map")
    assert path.endswith(".npz")
    loaded = load_map(path, cfg())
    assert loaded.num_voxels == omap.num_voxels
    assert loaded.next_id == omap.next_id and loaded.frames == omap.frames
    a, b = omap.snapshot(), loaded.snapshot()
    assert [o.id for o in a.objects] == [o.id for o in b.objects]
    for x, y in zip(a.objects, b.objects):
        assert np.array_equal(x.points, y.points) and np.array_equal(x.colors, y.colors)
        assert x.num_observations == y.num_observations and x.last_seen == y.last_seen
        if x.embedding is not None:
            assert np.allclose(x.embedding, y.embedding)
        if x.best_view is not None:
            assert np.array_equal(x.best_view, y.best_view)
        assert (x.moved_from is None) == (y.moved_from is None) and x.moved_at == y.moved_at
        if x.moved_from is not None:
            assert np.array_equal(x.moved_from, y.moved_from)
    assert sum(o.moved_from is not None for o in b.objects) == 1
    # A loaded map keeps integrating: the same objects are found again.
    integrate(loaded, [box_surface([0, 0, 0], [0.4, 0.4, 0.4])])
    assert len(loaded.objects) == len(omap.objects)


def test_save_leaves_no_temporary_files(tmp_path, omap):
    save_map(omap, tmp_path / "m.npz")
    save_map(omap, tmp_path / "m.npz")  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]


def _arrays(path):
    with np.load(path, allow_pickle=False) as d:
        return {k: d[k] for k in d.files}


def _write(path, arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda a: a.update(version=np.array(99, np.int64)),
        lambda a: a.update(format=np.array("other-map")),
        lambda a: a.pop("ids"),
        lambda a: a.update(ids=a["ids"][:-1]),
        lambda a: a.update(ids=np.where(a["ids"] >= 0, 999, a["ids"]).astype(np.int32)),
        lambda a: a.update(keys=np.zeros_like(a["keys"])),
        lambda a: a.update(colors=np.full_like(a["colors"], np.nan)),
        lambda a: a.update(voxel_size=np.array(-1.0)),
        lambda a: a.update(hits=a["hits"].astype(np.float64)),
        lambda a: a.update(obj_views=a["obj_views"][:-1]),
        lambda a: a.update(next_id=np.array(0, np.int64)),
        lambda a: a.update(obj_id=np.zeros_like(a["obj_id"])),
    ],
)
def test_inconsistent_files_are_rejected(tmp_path, omap, mutate):
    good = save_map(omap, tmp_path / "good.npz")
    arrays = _arrays(good)
    mutate(arrays)
    bad = tmp_path / "bad.npz"
    _write(bad, arrays)
    with pytest.raises(MapFileError):
        load_map(bad, cfg())


def test_object_arrays_need_pickle_and_are_refused(tmp_path, omap):
    arrays = _arrays(save_map(omap, tmp_path / "good.npz"))
    arrays["obj_id"] = np.array([object(), 1], dtype=object)
    bad = tmp_path / "pickled.npz"
    _write(bad, arrays)
    with pytest.raises(MapFileError):
        load_map(bad, cfg())


@pytest.mark.parametrize("content", [b"", b"not a zip file", b"PK\x03\x04" + b"\x00" * 50])
def test_garbage_files_are_rejected(tmp_path, content):
    bad = tmp_path / "garbage.npz"
    bad.write_bytes(content)
    with pytest.raises(MapFileError):
        load_map(bad, FusionConfig())


def test_truncated_file_is_rejected(tmp_path, omap):
    data = open(save_map(omap, tmp_path / "good.npz"), "rb").read()
    bad = tmp_path / "cut.npz"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(MapFileError):
        load_map(bad, cfg())


def test_missing_file(tmp_path):
    with pytest.raises(MapFileError, match="no map file"):
        load_map(tmp_path / "absent.npz", FusionConfig())


def test_corrupt_array_member_is_rejected(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("format.npy", b"\x93NUMPY garbage")
    bad = tmp_path / "odd.npz"
    bad.write_bytes(buf.getvalue())
    with pytest.raises(MapFileError):
        load_map(bad, FusionConfig())


# --------------------------------------------------------------------------- issue 10, fault 1
# A file that passes validation must never break a later query: every field's range is checked.
# Each case names the field and what the loader must say about it.


def _with_first_object(name, value):
    def mutate(a):
        arr = a[name].copy()
        arr[0] = value
        a[name] = arr

    return mutate


FIELD_CASES = {
    "first_seen_nan": (_with_first_object("obj_first_seen", np.nan), "first-seen"),
    "first_seen_negative": (_with_first_object("obj_first_seen", -5.0), "first-seen"),
    "last_seen_inf": (_with_first_object("obj_last_seen", np.inf), "last-seen"),
    "last_seen_beyond_ros_time": (_with_first_object("obj_last_seen", 1e12), "last-seen"),
    "last_seen_before_first_seen": (_with_first_object("obj_first_seen", 1e6), "precedes"),
    "num_observations_negative": (_with_first_object("obj_num_observations", -3), "observation counts"),
    "num_voxels_negative": (_with_first_object("obj_num_voxels", -1), "voxel counts"),
    "num_voxels_inconsistent": (_with_first_object("obj_num_voxels", 1), "do not match the voxel slots"),
    "hits_negative": (_with_first_object("hits", np.array([-4, 0, 0, 0], np.int32)), "hit counts"),
    "color_n_negative": (_with_first_object("color_n", -1), "colour counts"),
    "colour_out_of_range": (_with_first_object("colors", np.array([300.0, 0, 0], np.float32)), "colours"),
    "colour_negative": (_with_first_object("colors", np.array([-1.0, 0, 0], np.float32)), "colours"),
    "key_near_int64_max": (_with_first_object("keys", np.iinfo(np.int64).max - 1), "packable range"),
    "key_negative": (_with_first_object("keys", -17), "non-negative"),
    "slot_id_below_minus_one": (_with_first_object("ids", np.array([-2, -1, -1, -1], np.int32)), "slot ids"),
    "embedding_nan": (lambda a: a.update(obj_embedding_sum=np.full_like(a["obj_embedding_sum"], np.nan)), "embeddings"),
    "embedding_weight_negative": (_with_first_object("obj_embedding_weight", -1.0), "embedding weights"),
    "view_quality_nan": (_with_first_object("obj_view_quality", np.nan), "best-view qualities"),
    "view_shape_not_rgb": (lambda a: a.update(obj_view_shape=a["obj_view_shape"][:, [0, 2, 1]]), "best-view"),
    "frames_negative": (lambda a: a.update(frames=np.array(-1, np.int64)), "frames"),
    "next_id_beyond_int32": (lambda a: a.update(next_id=np.array(2**40, np.int64)), "next_id"),
    "object_id_beyond_int32": (_with_first_object("obj_id", 2**40), "object ids"),
    "voxel_size_nan": (lambda a: a.update(voxel_size=np.array(np.nan)), "voxel_size"),
    "no_slots": (
        lambda a: a.update(ids=a["ids"][:, :0], hits=a["hits"][:, :0]),
        "at least one object slot",
    ),
}


@pytest.mark.parametrize("case", sorted(FIELD_CASES))
def test_every_field_range_is_checked(tmp_path, omap, case):
    mutate, message = FIELD_CASES[case]
    arrays = _arrays(save_map(omap, tmp_path / "good.npz"))
    mutate(arrays)
    bad = tmp_path / "bad.npz"
    _write(bad, arrays)
    with pytest.raises(MapFileError, match=message):
        load_map(bad, cfg())


def test_a_map_that_loads_gives_snapshots_with_finite_times(tmp_path, omap):
    loaded = load_map(save_map(omap, tmp_path / "m.npz"), cfg())
    for o in loaded.snapshot().objects:
        assert np.isfinite(o.first_seen) and np.isfinite(o.last_seen) and o.num_observations >= 0


@pytest.mark.parametrize("content", [b"root:x:0:0:root:/root:/bin/bash\n", b"\x93NUMPY\x01\x00v\x00{'descr': '<f8'}", b"\x80\x04K\x01."])
def test_non_map_file_gets_our_message_not_numpys(tmp_path, content):
    bad = tmp_path / "passwd.npz"
    bad.write_bytes(content)
    with pytest.raises(MapFileError) as e:
        load_map(bad, FusionConfig())
    assert "not a core3d map file" in str(e.value) and "pickle" not in str(e.value)


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write(tmp_path):
    import os
    import subprocess
    import sys

    from core3d_ros.core.fileio import atomic_write_bytes

    target = tmp_path / "map.npz"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # a process that has ended: its pid names no live writer
    left = tmp_path / f".map.npz.{dead_pid}.abc123.tmp"
    left.write_bytes(b"half a map")
    live = tmp_path / f".map.npz.{os.getpid()}.def456.tmp"  # a writer still running (this process)
    live.write_bytes(b"being written")
    other = tmp_path / f".other.npz.{dead_pid}.x.tmp"  # another target's: not ours to remove
    other.write_bytes(b"x")
    atomic_write_bytes(target, b"new map")
    assert target.read_bytes() == b"new map"
    assert not left.exists() and live.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, live.name, other.name])
