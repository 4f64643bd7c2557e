"""Map file path policy (issue 10, fault 6): map files live in the maps directory."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from core3d_ros.core.mappaths import MapPathError, MapPathPolicy


@pytest.fixture
def policy(tmp_path: Path) -> MapPathPolicy:
    return MapPathPolicy(maps_dir=str(tmp_path / "maps"))


def test_relative_names_resolve_inside_the_maps_directory(policy, tmp_path):
    root = tmp_path / "maps"
    assert policy.resolve_for_write("kitchen") == root / "kitchen.npz"
    assert policy.resolve_for_write("floors/first.npz") == root / "floors" / "first.npz"
    assert (root / "floors").is_dir()  # folders inside the maps directory are created
    (root / "kitchen.npz").write_bytes(b"x")
    assert policy.resolve_for_read("kitchen.npz") == root / "kitchen.npz"
    assert policy.resolve_for_read(str(root / "kitchen.npz")) == root / "kitchen.npz"


@pytest.mark.parametrize(
    "requested", ["/nonexistent_dir/sub/map.npz", "/etc/passwd", "../outside", "floors/../../outside.npz", "/tmp/x.npz"]
)
def test_paths_outside_are_refused(policy, requested):
    with pytest.raises(MapPathError, match="outside the maps directory.*allow_any_map_path"):
        policy.resolve_for_write(requested)
    assert not Path("/nonexistent_dir").exists()


def test_device_files_are_refused_even_when_any_path_is_allowed(tmp_path):
    anyp = MapPathPolicy(maps_dir=str(tmp_path), allow_any=True)
    with pytest.raises(MapPathError, match="not a regular file"):
        anyp.resolve_for_read("/dev/null")
    with pytest.raises(MapPathError, match="not a regular file"):
        anyp.resolve_for_write("/dev/null", suffix="")
    # the map suffix is added before the check: /dev/null becomes /dev/null.npz (refused: outside)
    with pytest.raises(MapPathError, match="outside"):
        MapPathPolicy(maps_dir=str(tmp_path)).resolve_for_write("/dev/null")
    with pytest.raises(MapPathError, match="directory"):
        anyp.resolve_for_read(str(tmp_path))


def test_symlinks_out_of_the_directory_are_refused(policy, tmp_path):
    root = tmp_path / "maps"
    root.mkdir()
    secret = tmp_path / "secret.npz"
    secret.write_bytes(b"x")
    (root / "link.npz").symlink_to(secret)
    (root / "dirlink").symlink_to(tmp_path)
    with pytest.raises(MapPathError, match="symlink"):
        policy.resolve_for_read("link.npz")
    with pytest.raises(MapPathError, match="symlink"):
        policy.resolve_for_write("link.npz")
    with pytest.raises(MapPathError, match="outside"):
        policy.resolve_for_write("dirlink/new.npz")
    # a symlink that stays inside is fine
    (root / "real.npz").write_bytes(b"y")
    (root / "alias.npz").symlink_to(root / "real.npz")
    assert policy.resolve_for_read("alias.npz") == root / "real.npz"


def test_allow_any_permits_other_directories(tmp_path):
    anyp = MapPathPolicy(maps_dir=str(tmp_path / "maps"), allow_any=True)
    target = tmp_path / "elsewhere" / "m.npz"
    assert anyp.resolve_for_write(str(target)) == target


def test_empty_and_missing(policy):
    with pytest.raises(MapPathError, match="empty"):
        policy.resolve_for_write("  ")
    with pytest.raises(MapPathError, match="no map file"):
        policy.resolve_for_read("absent.npz")
    for folder in (".", "..", "/", "sub/", "a/.."):
        with pytest.raises(MapPathError, match="does not name a file"):
            policy.resolve_for_write(folder)
    with pytest.raises(MapPathError, match="NUL"):
        policy.resolve_for_read("a\x00b")


def test_home_is_expanded(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    p = MapPathPolicy(maps_dir="~/maps")
    assert p.resolve_for_write("~/maps/a") == tmp_path / "maps" / "a.npz"
    assert p.root == Path(os.path.realpath(tmp_path / "maps"))
