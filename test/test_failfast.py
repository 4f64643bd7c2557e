"""Bad back-end configuration fails at start-up, in one line naming the parameter.

Every back-end (segmenter, encoder, their checkpoints and devices) is built when a Mapper is
made, so the node and the ``core3d`` command refuse to start instead of rejecting every
keyframe later. The shipped GPU profile (config/core3d_gpu.yaml) is loaded here too, with small
random-weight architectures swapped in where the real ones are too heavy for a CPU, so it
cannot rot.
"""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core3d_ros.config import ConfigError, MapperConfig, load_config
from core3d_ros.core.mapper import Mapper
from core3d_ros.core.registry import BackendError, Registry
from core3d_ros.config import with_overrides

ROOT = Path(__file__).resolve().parents[1]
GPU_PROFILE = ROOT / "config" / "core3d_gpu.yaml"


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


# ------------------------------------------------------------------ the registry


def test_registry_lists_known_names_for_an_unknown_one():
    reg: Registry = Registry("widget", "widget.name")
    reg.register("b", colour="blue")(lambda: "B")
    reg.register("a")(lambda: "A")
    assert reg.create("a") == "A"
    assert reg.names() == ["a", "b"] and reg.info("b") == {"colour": "blue"}
    with pytest.raises(BackendError, match=r"unknown widget 'c' \(parameter widget\.name\); available: \['a', 'b'\]"):
        reg.get("c")
    assert issubclass(BackendError, ConfigError)
    # names the caller handles itself are listed; the error type is the registry's
    reg = Registry("widget", "--kind", error=KeyError, also=("auto",))
    reg.register("a")(lambda: "A")
    with pytest.raises(KeyError, match=r"available: \['auto', 'a'\]"):
        reg.info("z")


def test_back_end_modules_register_themselves_without_their_base_importing_them():
    """Each registry's base module imports no back-end: the package __init__ does (no import circle)."""
    import ast

    for base, backends in {
        "segment/base.py": {"geometric", "oracle", "sam", "semantic_sam"},
        "embed/base.py": {"clip"},
        "datasets/base.py": {"building", "replica", "scannet", "sevenscenes", "synthetic", "threedmatch", "tum"},
    }.items():
        tree = ast.parse((ROOT / "core3d_ros" / "core" / base).read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 1 for a in n.names}
        imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 1 and n.module}
        assert not imported & backends, (base, imported & backends)
    from core3d_ros.core.datasets.base import DATASETS
    from core3d_ros.core.embed.base import available_encoders
    from core3d_ros.core.segment.base import available_segmenters

    assert available_segmenters() == ["geometric", "oracle", "sam", "semantic_sam"]
    assert available_encoders() == ["none", "mean_color", "open_clip"]
    assert DATASETS.names() == ["3dmatch", "7scenes", "replica", "scannet", "synthetic", "synthetic-building", "tum"]


# ------------------------------------------------------------------ each back-end parameter


def _mapper_error(**sections) -> str:
    with pytest.raises(BackendError) as info:
        Mapper(with_overrides(MapperConfig(), **sections))
    message = str(info.value)
    assert "\n" not in message, "one line"
    return message


def test_unknown_segmenter_name():
    msg = _mapper_error(segmenter={"name": "semantic-sam"})
    assert "segmenter.name" in msg and "semantic_sam" in msg and "geometric" in msg


def test_missing_segmenter_checkpoint(tmp_path):
    msg = _mapper_error(segmenter={"name": "sam", "checkpoint": str(tmp_path / "sam_vit_b.pth")})
    assert "segmenter.checkpoint" in msg and "no such file" in msg
    msg = _mapper_error(segmenter={"name": "sam", "checkpoint": ""})
    assert "segmenter.checkpoint" in msg


def test_bad_segmenter_model_type(tmp_path):
    ckpt = tmp_path / "sam.pth"
    ckpt.write_bytes(b"")
    assert "segmenter.model_type" in _mapper_error(segmenter={"name": "sam", "model_type": "vit_x", "checkpoint": str(ckpt)})


@pytest.mark.skipif(_cuda_available(), reason="this machine has CUDA: a cuda device is valid here")
def test_unavailable_segmenter_device(tmp_path):
    ckpt = tmp_path / "sam.pth"
    ckpt.write_bytes(b"")
    msg = _mapper_error(segmenter={"name": "sam", "checkpoint": str(ckpt), "device": "cuda"})
    assert "segmenter.device" in msg and "CUDA is not available" in msg


def test_unknown_encoder_name():
    msg = _mapper_error(embed={"name": "clip"})
    assert "embed.name" in msg and "open_clip" in msg


def test_missing_encoder_checkpoint(tmp_path):
    msg = _mapper_error(embed={"name": "open_clip", "model": "ViT-S-32", "checkpoint": str(tmp_path / "clip.pt")})
    assert "embed.checkpoint" in msg


@pytest.mark.skipif(_cuda_available(), reason="this machine has CUDA: a cuda device is valid here")
def test_unavailable_encoder_device():
    msg = _mapper_error(embed={"name": "open_clip", "model": "ViT-S-32", "allow_random_weights": True, "device": "cuda"})
    assert "embed.device" in msg


def test_query_only_mapper_builds_no_segmenter(tmp_path):
    """``core3d query`` loads a map with segment=False: a segmenter it will never run cannot stop it."""
    cfg = with_overrides(MapperConfig(), segmenter={"name": "sam", "checkpoint": str(tmp_path / "none.pth")})
    mapper = Mapper(cfg, segment=False)
    with pytest.raises(RuntimeError, match="segment=False"):
        mapper.segmenter  # noqa: B018


# ------------------------------------------------------------------ the commands


def _env() -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["ROS_DOMAIN_ID"] = str(200 + os.getpid() % 30)
    return env


def test_mapping_node_exits_non_zero_naming_the_parameter(tmp_path):
    pytest.importorskip("rclpy")
    pytest.importorskip("core3d.msg", reason="the core3d interfaces are not built (run scripts/setup.sh)")
    cmd = [sys.executable, "-m", "core3d_ros.ros.node", "--ros-args", "-p", "segmenter.name:=semantic-sam"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=_env(), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if "segmenter.name" in ln]
    assert len(lines) == 1 and "unknown segmenter 'semantic-sam'" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_core3d_map_exits_non_zero_naming_the_parameter(tmp_path):
    from core3d_ros.cli import main

    cfg = tmp_path / "bad.yaml"
    cfg.write_text(f"embed:\n  name: open_clip\n  model: ViT-S-32\n  checkpoint: {tmp_path / 'missing.pt'}\n")
    assert main(["map", "synthetic", "--frames", "2", "--config", str(cfg), "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()  # nothing mapped, nothing written


# ------------------------------------------------------------------ the GPU profile


def test_gpu_profile_is_core3d_as_in_the_paper():
    cfg = load_config(GPU_PROFILE)
    assert cfg.segmenter.name == "semantic_sam" and cfg.segmenter.model_type == "L"
    assert cfg.segmenter.granularity_levels == [1, 2, 3, 4, 5, 6]
    assert cfg.embed.name == "open_clip" and cfg.embed.model == "EVA02-L-14" and cfg.embed.half_precision
    assert cfg.segmenter.device == cfg.embed.device == "cuda"
    assert cfg.keyframes.enabled
    open_clip = pytest.importorskip("open_clip")
    assert cfg.embed.model in open_clip.list_models()
    assert cfg.embed.pretrained in open_clip.list_pretrained_tags_by_model(cfg.embed.model)


def test_gpu_profile_builds_through_the_real_loading_paths(tmp_path):
    """The profile's back-ends, built through the real checkpoint-loading paths with small
    random-weight stand-ins (ViT-S-32 CLIP; SAM vit_b instead of Semantic-SAM, which is not
    installable from PyPI) on the CPU; everything else as the profile says."""
    torch = pytest.importorskip("torch")
    open_clip = pytest.importorskip("open_clip")
    sam = pytest.importorskip("segment_anything")
    cfg = load_config(GPU_PROFILE)
    clip_ckpt = tmp_path / "clip.pt"
    torch.save(open_clip.create_model("ViT-S-32", pretrained=None).state_dict(), clip_ckpt)
    sam_ckpt = tmp_path / "sam_vit_b.pth"
    torch.save(sam.sam_model_registry["vit_b"](checkpoint=None).state_dict(), sam_ckpt)
    cfg = dataclasses.replace(
        cfg,
        embed=dataclasses.replace(cfg.embed, model="ViT-S-32", checkpoint=str(clip_ckpt), pretrained="", device="cpu"),
        segmenter=dataclasses.replace(
            cfg.segmenter, name="sam", model_type="vit_b", checkpoint=str(sam_ckpt), device="cpu", points_per_side=4
        ),
    )
    mapper = Mapper(cfg)
    assert mapper.segmenter.name == "sam" and mapper.encoder is not None
    assert mapper.encoder.semantic is False  # random weights are never presented as semantic
    # Without Semantic-SAM installed, the profile as shipped stops at start-up with the install hint.
    if importlib_find("semantic_sam") is None:
        with pytest.raises(BackendError, match="segmenter.checkpoint|Semantic-SAM"):
            Mapper(load_config(GPU_PROFILE))


def importlib_find(name: str):
    import importlib.util

    return importlib.util.find_spec(name)


@pytest.mark.parametrize("busy", [True, False])
def test_an_entry_point_ends_with_its_code_while_a_model_call_is_still_running(busy):
    # A keyframe still in a model when the node stops must not turn exit code 0 into SIGABRT
    # (interpreter shutdown under a running library call): the process ends at once instead.
    code = (
        "import sys, threading, time\n"
        "from core3d_ros.ros.runner import exit_now_if_busy\n"
        f"if {busy}: threading.Thread(target=time.sleep, args=(60,), name='core3d_perception', daemon=True).start()\n"
        "sys.exit(exit_now_if_busy(3))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert r.returncode == 3, r.stderr
    assert ("still busy: core3d_perception" in r.stderr) == busy, r.stderr


def test_idle_fusion_workers_are_no_work_in_flight():
    # The fusion engine's worker threads wait between frames; at exit they are idle, so the
    # entry point ends normally (interpreter shutdown, atexit handlers) with its code.
    code = (
        "import sys\n"
        "import numpy as np\n"
        "from core3d_ros.config import FusionConfig\n"
        "from core3d_ros.core.camera import CameraIntrinsics\n"
        "from core3d_ros.core.fusion.object_map import ObjectMap\n"
        "from core3d_ros.ros.runner import exit_now_if_busy\n"
        "m = ObjectMap(FusionConfig(threads=2, min_segment_voxels=1))\n"
        "K = CameraIntrinsics(fx=60.0, fy=60.0, cx=32.0, cy=24.0, width=64, height=48)\n"
        "s = m.integrate_frame(np.full((48, 64), 2.0, np.float32), K, np.eye(4), np.zeros((48, 64, 3), np.uint8), np.ones((48, 64), np.uint16), 0.0)\n"
        "assert s.voxels > 0 and m.num_voxels > 0, s\n"
        "import atexit; atexit.register(lambda: print('atexit ran'))\n"
        "sys.exit(exit_now_if_busy(3))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 3, r.stderr
    assert "still busy" not in r.stderr and "atexit ran" in r.stdout, (r.stdout, r.stderr)
