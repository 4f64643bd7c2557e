"""Map files with the scene graph (format version 2): round trip, version 1 files still load,
a damaged hierarchy is refused alone with a clear error while the map itself loads."""
import numpy as np
import pytest

from core3d_ros.core.hierarchy.graph import Floor, Room, SceneGraph
from core3d_ros.core.mapio import VERSION, MapFileError, load_hierarchy, load_map, save_map
from test_fusion import cfg
from test_mapio import _arrays, _write, omap  # noqa: F401 (fixture)

# Every array of a version 1 map file (the format before the hierarchy).
V1_ARRAYS = {
    "format", "version", "voxel_size", "frames", "next_id", "keys", "ids", "hits", "colors", "color_n", "obj_id",
    "obj_num_voxels", "obj_num_observations", "obj_first_seen", "obj_last_seen", "obj_embedding_sum",
    "obj_embedding_weight", "obj_view_shape", "obj_view_quality", "obj_views",
}


def two_room_graph() -> SceneGraph:
    """Floor 1 at z=0 with a kitchen (2 x 3 m, objects 1, 2) and a numbered room 5 (1 x 1 m, no
    objects); floor 2 at z=3 without rooms. Up is -y as in a 7-Scenes map."""
    kitchen = Room(
        id=1, floor_id=1, outline=np.array([[0, 0, 0], [2, 0, 0], [2, 3, 0], [0, 3, 0]], float), area=6.0,
        centroid=np.array([1.0, 1.5, 0.0]), label="kitchen", label_score=0.31, summary="a small kitchen",
        object_ids=[1, 2], keyframe_ids=[4, 9],
    )
    small = Room(id=5, floor_id=1, outline=np.array([[2, 0, 0], [3, 0, 0], [3, 1, 0]], float), area=1.0,
                 centroid=np.array([2.5, 0.5, 0.0]), label="room 5")
    return SceneGraph(
        up=np.array([0.0, -1.0, 0.0]), up_source="estimated", note="", version=7, splits=2, merges=1,
        floors=[Floor(id=1, height=0.0, ceiling=2.6, label="floor 1", room_ids=[1, 5]),
                Floor(id=2, height=3.0, ceiling=5.5, label="floor 2")],
        rooms=[kitchen, small],
    )


def test_hierarchy_round_trip(tmp_path, omap):  # noqa: F811
    g = two_room_graph()
    path = save_map(omap, tmp_path / "m", hierarchy=g)
    assert int(_arrays(path)["version"]) == VERSION == 2
    assert load_map(path, cfg()).num_voxels == omap.num_voxels
    h = load_hierarchy(path)
    assert h is not None and h.version == 7 and h.up_source == "estimated" and h.up.tolist() == [0.0, -1.0, 0.0]
    assert (h.splits, h.merges) == (2, 1)
    assert [(f.id, f.height, f.ceiling, f.label, f.room_ids) for f in h.floors] == [
        (1, 0.0, 2.6, "floor 1", [1, 5]), (2, 3.0, 5.5, "floor 2", []),
    ]
    k, s = h.rooms
    assert (k.id, k.floor_id, k.label, k.label_score, k.summary, k.area) == (1, 1, "kitchen", 0.31, "a small kitchen", 6.0)
    assert k.outline.tolist() == [[0, 0, 0], [2, 0, 0], [2, 3, 0], [0, 3, 0]]
    assert k.object_ids == [1, 2] and k.keyframe_ids == [4, 9]
    assert (s.id, s.label, s.object_ids, s.keyframe_ids, len(s.outline)) == (5, "room 5", [], [], 3)
    assert h.room_of_object(2).id == 1 and h.room_of_object(3) is None


def test_empty_hierarchy_round_trips(tmp_path, omap):  # noqa: F811
    path = save_map(omap, tmp_path / "m", hierarchy=SceneGraph(note="no floor surface seen"))
    h = load_hierarchy(path)
    assert h is not None and h.floors == [] and h.rooms == [] and h.note == "no floor surface seen"


def test_map_saved_without_hierarchy_has_none(tmp_path, omap):  # noqa: F811
    path = save_map(omap, tmp_path / "m")
    assert load_hierarchy(path) is None


def test_version_1_file_still_loads(tmp_path, omap):  # noqa: F811
    arrays = _arrays(save_map(omap, tmp_path / "m"))
    arrays["version"] = np.array(1, np.int64)
    for name in ("obj_moved_from", "obj_moved_at"):  # version 2's moves (a map without a hierarchy)
        del arrays[name]
    for name in [a for a in arrays if a.startswith("corr_")]:  # version 2's optional pose-correction state
        del arrays[name]
    assert set(arrays) == V1_ARRAYS  # exactly the old format's arrays
    _write(tmp_path / "v1.npz", arrays)
    loaded = load_map(tmp_path / "v1.npz", cfg())
    assert loaded.num_voxels == omap.num_voxels and sorted(loaded.objects) == sorted(omap.objects)
    assert load_hierarchy(tmp_path / "v1.npz") is None
    assert all(s.moved_from is None for s in loaded.objects.values())


def _damage(name, value):
    def mutate(a):
        a[name] = value
    return mutate


@pytest.mark.parametrize(
    "mutate, message",
    [
        (_damage("hier_up", np.array([0.0, 0.0, 3.0])), "unit"),
        (_damage("hier_up_source", np.array("guessed")), "up source"),
        (_damage("hier_events", np.array([1, -1], np.int64)), "events"),
        (_damage("hier_room_floor", np.array([1, 9], np.int64)), "unknown floor"),
        (_damage("hier_room_id", np.array([1, 1], np.int64)), "room ids"),
        (_damage("hier_room_outline_len", np.array([4, 4], np.int64)), "outline lengths"),
        (_damage("hier_room_objects", np.array([1.0, 2.0])), "hier_room_objects"),
        (_damage("hier_room_area", np.array([6.0, np.nan])), "non-finite"),
        (_damage("hier_floor_rooms", np.array([1, 6], np.int64)), "unknown room"),
        (_damage("hier_floor_ceiling", np.array([-1.0, 5.5])), "ceiling"),
        (lambda a: a.pop("hier_room_label"), "missing array 'hier_room_label'"),
        (_damage("hier_room_label", np.array([1, 2])), "text"),
    ],
)
def test_damaged_hierarchy_is_refused_alone(tmp_path, omap, mutate, message):  # noqa: F811
    arrays = _arrays(save_map(omap, tmp_path / "m", hierarchy=two_room_graph()))
    mutate(arrays)
    _write(tmp_path / "bad.npz", arrays)
    with pytest.raises(MapFileError, match="hierarchy") as e:
        load_hierarchy(tmp_path / "bad.npz")
    assert message in str(e.value)
    assert load_map(tmp_path / "bad.npz", cfg()).num_voxels == omap.num_voxels  # the map itself loads


def test_mapper_saves_its_hierarchy_and_drops_a_damaged_one_on_load(tmp_path):
    from core3d_ros.config import MapperConfig, with_overrides
    from core3d_ros.core.mapper import Mapper

    conf = with_overrides(MapperConfig(), embed={"name": "mean_color"}, geometry={"enabled": False})
    mapper = Mapper(conf, segment=False)
    mapper.hierarchy = two_room_graph()
    path = mapper.save(str(tmp_path / "m.npz"))
    other = Mapper(conf, segment=False)
    other.load(path)
    assert other.hierarchy is not None and [r.label for r in other.hierarchy.rooms] == ["kitchen", "room 5"]
    assert other.hierarchy_error == ""
    arrays = _arrays(path)
    arrays["hier_room_floor"] = np.array([1, 9], np.int64)
    _write(tmp_path / "bad.npz", arrays)
    other.load(str(tmp_path / "bad.npz"))  # the map loads; its hierarchy is dropped, and said so
    assert other.hierarchy is None and "unknown floor" in other.hierarchy_error
    other.hierarchy = two_room_graph()
    other.clear()
    assert other.hierarchy is None
