"""config/mapping.yaml and core3d_ros.config cannot drift apart; the loader rejects bad input.

After adding or changing a field in core3d_ros/config.py, regenerate the parameters file (values
from the dataclass defaults, comments from the source) with

    scripts/in-env python test/test_config.py --write
"""
from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import json
import math
import re
import sys
import tokenize
from pathlib import Path

import pytest
import yaml

from core3d_ros.config import (
    INF,
    ConfigError,
    MapperConfig,
    describe,
    flatten,
    from_dict,
    load_config,
    unflatten,
    validate,
)

ROOT = Path(__file__).resolve().parents[1]
MAPPING_YAML = ROOT / "config" / "mapping.yaml"
NODE_NAME = "core3d_mapping"
REGENERATE = "regenerate it with: scripts/in-env python test/test_config.py --write"


def _raw_parameters() -> dict:
    with open(MAPPING_YAML, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    assert list(data) == [NODE_NAME], f"{MAPPING_YAML}: top-level key must be {NODE_NAME!r}"
    params = data[NODE_NAME]["ros__parameters"]
    assert isinstance(params, dict)
    return params


def _flat_raw() -> dict:
    """Dotted view of the YAML file as written (no defaults filled in)."""
    out: dict = {}

    def walk(node: dict, prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                out[f"{prefix}{key}"] = value

    walk(_raw_parameters(), "")
    return out


def _unsettable_in_ros_yaml(value) -> bool:
    # A ROS 2 parameters file cannot give an empty list a type (rcl reads `[]` as "not set"),
    # so such defaults stay out of the file.
    return isinstance(value, list) and not value


def _diff(a, b) -> dict:
    fa, fb = flatten(a), flatten(b)
    return {k: (fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)}


# ------------------------------------------------------------------ YAML == dataclass defaults


def test_mapping_yaml_equals_defaults():
    cfg = load_config(MAPPING_YAML)
    assert isinstance(cfg, MapperConfig)
    diff = _diff(cfg, MapperConfig())
    assert not diff, f"config/mapping.yaml differs from MapperConfig() (yaml, code): {diff}; {REGENERATE}"
    assert cfg == MapperConfig()


def test_mapping_yaml_is_complete():
    written = _flat_raw()
    defaults = flatten(MapperConfig())
    missing = [
        k for k, v in defaults.items() if k not in written and not _unsettable_in_ros_yaml(v)
    ]
    assert not missing, f"config/mapping.yaml lacks these MapperConfig fields: {missing}; {REGENERATE}"
    unknown = sorted(set(written) - set(defaults))
    assert not unknown, f"config/mapping.yaml has keys MapperConfig does not know: {unknown}; {REGENERATE}"


def test_mapping_yaml_values_have_the_declared_types():
    """Floats are written as floats (1.0, not 1) so ROS declares them as doubles."""
    written = _flat_raw()
    for key, default in flatten(MapperConfig()).items():
        if key not in written:
            continue
        value = written[key]
        assert type(value) is type(default), f"{key}: {value!r} is not a {type(default).__name__}"
        if isinstance(default, list) and default:
            assert all(type(v) is type(default[0]) for v in value), f"{key}: {value!r}"


def test_every_field_is_a_ros_parameter_type():
    """Leaves are bool/int/float/str or lists of one of them: each maps onto a ROS parameter."""
    for key, value in flatten(MapperConfig()).items():
        if isinstance(value, list):
            assert all(isinstance(v, (bool, int, float, str)) for v in value), key
            assert len({type(v) for v in value}) <= 1, key
        else:
            assert isinstance(value, (bool, int, float, str)), f"{key}: {type(value).__name__}"


def test_ros_parameter_parser_reads_mapping_yaml():
    """rcl's own parser (as used by --params-file) types every value as the dataclass does."""
    rclpy = pytest.importorskip("rclpy")
    from rclpy.context import Context
    from rclpy.parameter import Parameter
    from rclpy.signals import SignalHandlerOptions

    expected_type = {
        bool: Parameter.Type.BOOL,
        int: Parameter.Type.INTEGER,
        float: Parameter.Type.DOUBLE,
        str: Parameter.Type.STRING,
    }
    array_type = {
        bool: Parameter.Type.BOOL_ARRAY,
        int: Parameter.Type.INTEGER_ARRAY,
        float: Parameter.Type.DOUBLE_ARRAY,
        str: Parameter.Type.STRING_ARRAY,
    }
    ctx = Context()
    rclpy.init(
        args=["--ros-args", "--params-file", str(MAPPING_YAML)],
        context=ctx,
        signal_handler_options=SignalHandlerOptions.NO,
    )
    try:
        node = rclpy.create_node(
            NODE_NAME,
            context=ctx,
            automatically_declare_parameters_from_overrides=True,
            start_parameter_services=False,
        )
        try:
            params = {p.name: p for p in node.get_parameters_by_prefix("").values()}
        finally:
            node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)

    for builtin in ("use_sim_time", "start_type_description_service"):  # rclpy's own
        params.pop(builtin, None)
    for key, default in flatten(MapperConfig()).items():
        if _unsettable_in_ros_yaml(default):
            assert key not in params
            continue
        assert key in params, f"{key} is not a parameter after --params-file"
        p = params[key]
        if isinstance(default, list):
            assert p.type_ == array_type[type(default[0])], f"{key}: {p.type_}"
            got = list(p.value)
            assert len(got) == len(default) and all(
                math.isclose(g, d) if isinstance(d, float) else g == d
                for g, d in zip(got, default)
            ), f"{key}: {got} != {default}"
        else:
            assert p.type_ == expected_type[type(default)], f"{key}: {p.type_}"
            assert p.value == default, f"{key}: {p.value!r} != {default!r}"
    assert set(params) <= set(flatten(MapperConfig())), sorted(
        set(params) - set(flatten(MapperConfig()))
    )


# ------------------------------------------------------------------ loader errors


@pytest.mark.parametrize(
    "data",
    [
        {"nonsense": 1},
        {"fusion": {"voxel_sise": 0.05}},
        {"segmenter": {"geometric": {"no_such_knob": 3}}},
        {"ros": {"colour_topic": "rgb"}},
    ],
    ids=["top", "section", "nested", "ros"],
)
def test_unknown_keys_raise(data):
    with pytest.raises(ConfigError):
        from_dict(data)


@pytest.mark.parametrize(
    "data",
    [
        {"fusion": {"voxel_size": "big"}},  # str for float
        {"fusion": {"voxel_size": True}},  # bool for float
        {"fusion": {"pixel_stride": 2.5}},  # float for int
        {"fusion": {"pixel_stride": True}},  # bool for int
        {"fusion": {"pixel_stride": "2"}},  # str for int
        {"ros": {"publish_points": "yes"}},  # str for bool
        {"ros": {"publish_points": 1}},  # int for bool
        {"segmenter": {"name": 5}},  # int for str
        {"segmenter": {"granularity_levels": 3}},  # scalar for list
        {"segmenter": {"granularity_levels": [1, "two"]}},  # bad list item
        {"fusion": 3},  # scalar for section
        {"segmenter": {"geometric": []}},  # list for section
    ],
)
def test_wrong_types_raise(data):
    with pytest.raises(ConfigError):
        from_dict(data)


def test_integers_are_accepted_for_floats():
    cfg = from_dict({"fusion": {"voxel_size": 1}})
    assert cfg.fusion.voxel_size == 1.0 and isinstance(cfg.fusion.voxel_size, float)


def test_missing_keys_keep_defaults():
    cfg = from_dict({"fusion": {"voxel_size": 0.05}})
    assert cfg.fusion.voxel_size == 0.05
    expected = MapperConfig()
    expected.fusion.voxel_size = 0.05
    assert cfg == expected
    assert from_dict({}) == MapperConfig()


def test_load_config_errors_from_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"{NODE_NAME}:\n  ros__parameters:\n    fusion:\n      voxel_sise: 0.05\n")
    with pytest.raises(ConfigError):
        load_config(bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("fusion:\n  pixel_stride: fast\n")
    with pytest.raises(ConfigError):
        load_config(wrong)
    not_mapping = tmp_path / "list.yaml"
    not_mapping.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError):
        load_config(not_mapping)


def test_plain_and_ros_layouts_load_alike(tmp_path):
    plain = tmp_path / "plain.yaml"
    plain.write_text("fusion:\n  voxel_size: 0.04\nros:\n  map_frame: world\n")
    ros = tmp_path / "ros.yaml"
    ros.write_text(
        f"{NODE_NAME}:\n  ros__parameters:\n    fusion:\n      voxel_size: 0.04\n"
        "    ros:\n      map_frame: world\n"
    )
    a, b = load_config(plain), load_config(ros)
    assert a == b
    assert a.fusion.voxel_size == 0.04 and a.ros.map_frame == "world"
    assert load_config(None) == MapperConfig()


# ------------------------------------------------------------------ validation: ranges, choices, rules


def test_defaults_are_valid_and_within_their_own_choices():
    assert validate(MapperConfig()) == MapperConfig()
    for key, value in flatten(MapperConfig()).items():
        choices = describe(MapperConfig, key).get("choices")
        assert choices is None or value in choices, key


def _below(lo):
    return lo - 1 if isinstance(lo, int) else lo - abs(lo) - 1.0


def test_every_declared_range_and_choice_is_enforced_in_one_line_naming_the_parameter():
    checked = 0
    for key, value in flatten(MapperConfig()).items():
        meta = describe(MapperConfig, key)
        bad = []
        if "range" in meta:
            lo, hi = meta["range"]
            bad += [_below(lo), float("nan")] if isinstance(value, float) else [_below(lo)]
            if hi not in (INF, 2**31 - 1):
                bad.append(hi + 1)
        if "choices" in meta:
            bad.append("no-such-" + value)
        for v in bad:
            with pytest.raises(ConfigError) as info:
                from_dict(unflatten({key: v}))
            message = str(info.value)
            assert message.startswith(f"{key} must be ") and "\n" not in message, message
            checked += 1
    assert checked > 150


@pytest.mark.parametrize(
    "data, message",
    [
        ({"fusion": {"voxel_size": 0}}, "fusion.voxel_size must be in [0.0001, 10.0], got 0.0"),
        ({"fusion": {"merge_interval": -1}}, "fusion.merge_interval must be >= 0, got -1"),
        ({"depth": {"max_depth": float("nan")}}, "depth.max_depth must be >= 0.0, got nan"),
        ({"ros": {"pose_type": "gps"}}, "ros.pose_type must be one of pose | odometry | tf, got 'gps'"),
        ({"ros": {"depth_qos": "fast"}}, "ros.depth_qos must be one of default | sensor_data | reliable | best_effort | system_default, got 'fast'"),
        ({"embed": {"resize_mode": "stretch"}}, "embed.resize_mode must be one of pad | squash | center_crop, got 'stretch'"),
        # the model steps' ranges hold whether they are enabled or not (the node declares them)
        ({"retrieval": {"llm": {"candidates": 0}}}, "retrieval.llm.candidates must be in [1, 32], got 0"),
        ({"fusion": {"device": "gpu"}}, "fusion.device must be cpu, cuda or cuda:N, got 'gpu'"),
        ({"geometry": {"device": "cuda:x"}}, "geometry.device must be auto, cpu or cuda[:N], got 'cuda:x'"),
        ({"ros": {"maps_dir": ""}}, "ros.maps_dir must not be empty"),
        ({"ros": {"pose_topic": ""}}, "ros.pose_topic must not be empty unless ros.pose_type is 'tf'"),
        ({"ros": {"camera_extrinsic": [1.0, 2.0]}}, "ros.camera_extrinsic: expected 7 numbers (x y z qx qy qz qw), got 2"),
        (
            {"ros": {"base_frame": "base_link", "camera_extrinsic": [0.0] * 6 + [1.0]}},
            "ros.base_frame and ros.camera_extrinsic are exclusive: the extrinsic comes from TF or from the parameter",
        ),
        ({"retrieval": {"llm": {"enabled": True, "model": "m"}}}, "retrieval.llm.base_url: empty; set the endpoint, e.g. http://127.0.0.1:8000/v1"),
    ],
)
def test_bad_values_fail_in_one_line_naming_the_parameter(data, message, tmp_path):
    with pytest.raises(ConfigError) as info:
        from_dict(data)
    assert str(info.value) == message
    path = tmp_path / "bad.yaml"  # a file says the same (what `core3d map --config` reads)
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == message


def test_a_disabled_llm_endpoint_is_not_checked():
    assert from_dict({"retrieval": {"llm": {"enabled": False, "base_url": "nonsense"}}}).retrieval.llm.base_url == "nonsense"


# ------------------------------------------------------------------ flatten / unflatten


def _modified() -> MapperConfig:
    cfg = MapperConfig()
    cfg.fusion.voxel_size = 0.04
    cfg.segmenter.granularity_levels = [2, 4]
    cfg.segmenter.progressive.tau_k = 0.2
    cfg.retrieval.vocabulary = ["mug", "chair"]
    cfg.ros.publish_points = False
    cfg.embed.name = "open_clip"
    return cfg


@pytest.mark.parametrize("cfg", [MapperConfig(), _modified()], ids=["defaults", "modified"])
def test_flatten_unflatten_round_trip(cfg):
    flat = flatten(cfg)
    assert all(not dataclasses.is_dataclass(v) for v in flat.values())
    assert "fusion.voxel_size" in flat and "segmenter.progressive.tau_k" in flat
    nested = unflatten(flat)
    assert nested == dataclasses.asdict(cfg)
    assert from_dict(nested) == cfg
    assert flatten(from_dict(unflatten(flat))) == flat


def test_flatten_names_match_sections():
    flat = flatten(MapperConfig())
    sections = {f.name for f in dataclasses.fields(MapperConfig)}
    assert {"depth", "fusion", "segmenter", "embed", "keyframes", "retrieval", "ros"} <= sections
    assert {k.split(".")[0] for k in flat} == sections


# ------------------------------------------------------------------ generating mapping.yaml

_HEADER = """\
# ROS 2 parameters of the core3d mapping node (`ros2 launch core3d mapping.launch.py`).
# Every key is a field of core3d_ros.config.MapperConfig (dotted ROS parameter names, e.g.
# fusion.voxel_size) and every value its default. Generated from core3d_ros/config.py by
# `python test/test_config.py --write`; test/test_config.py checks that the two agree.
"""
_COMMENT_COLUMN = 36


def _format_scalar(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        text = repr(value)
        if "e" in text:  # YAML wants a dot in the mantissa to read a float
            mantissa, exponent = text.split("e")
            text = f"{mantissa if '.' in mantissa else mantissa + '.0'}e{exponent}"
        return text
    if isinstance(value, str):
        plain = re.fullmatch(r"[A-Za-z_/][A-Za-z0-9_./-]*", value) is not None
        if plain and yaml.safe_load(value) == value:
            return value
        return json.dumps(value, ensure_ascii=False)
    raise TypeError(f"cannot write {value!r} as a ROS parameter")


def _format_value(value) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_format_scalar(v) for v in value) + "]"
    return _format_scalar(value)


def _source_comments(cls: type) -> dict[str, tuple[list[str], str]]:
    """field name -> (full-line comments above it, trailing comment), read from cls's source."""
    module = sys.modules[cls.__module__]
    source = inspect.getsource(module)
    tree = ast.parse(source)
    trailing: dict[int, str] = {}
    full_line: dict[int, str] = {}
    lines = source.splitlines()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            row, col = tok.start
            text = tok.string.lstrip("#").strip()
            if lines[row - 1][:col].strip():
                trailing[row] = text
            else:
                full_line[row] = text
    node = next(
        n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == cls.__name__
    )
    out: dict[str, tuple[list[str], str]] = {}
    prev_end = node.lineno
    for stmt in node.body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            above = [full_line[r] for r in range(prev_end + 1, stmt.lineno) if r in full_line]
            after = next(
                (trailing[r] for r in range(stmt.lineno, stmt.end_lineno + 1) if r in trailing),
                "",
            )
            out[stmt.target.id] = (above, after)
        prev_end = stmt.end_lineno
    return out


def _docstring_lines(cls: type) -> list[str]:
    doc = inspect.getdoc(cls) or ""
    if doc.startswith(f"{cls.__name__}("):  # the one dataclasses writes
        return []
    return [line.replace("``", "`") for line in doc.splitlines() if line.strip()]


def _line(indent: int, code: str, comment: str = "") -> str:
    text = " " * indent + code
    if comment:
        text = text.ljust(max(_COMMENT_COLUMN, len(text) + 2)) + "# " + comment
    return text.rstrip()


def _render_section(cfg, indent: int) -> list[str]:
    out: list[str] = []
    comments = _source_comments(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        above, after = comments.get(f.name, ([], ""))
        after = after or f.metadata.get("description", "")
        out.extend(_line(indent, "# " + c) for c in above)
        if dataclasses.is_dataclass(value):
            doc = _docstring_lines(type(value))
            out.append(_line(indent, f"{f.name}:", doc[0] if doc else after))
            out.extend(_line(indent + 2, "# " + d) for d in doc[1:])
            out.extend(_render_section(value, indent + 2))
        elif _unsettable_in_ros_yaml(value):
            note = (after + "; " if after else "") + "a parameters file cannot type []"
            out.append(_line(indent, f"# {f.name}: []", note))
        else:
            out.append(_line(indent, f"{f.name}: {_format_value(value)}", after))
    return out


def render_mapping_yaml(cfg: MapperConfig | None = None) -> str:
    cfg = cfg or MapperConfig()
    lines = _HEADER.splitlines() + [f"{NODE_NAME}:", "  ros__parameters:"]
    comments = _source_comments(MapperConfig)
    for f in dataclasses.fields(cfg):
        section = getattr(cfg, f.name)
        doc = _docstring_lines(type(section))
        lines.append("")
        lines.extend(_line(4, "# " + c) for c in comments.get(f.name, ([], ""))[0])
        lines.append(_line(4, f"{f.name}:", doc[0] if doc else ""))
        lines.extend(_line(6, "# " + d) for d in doc[1:])
        lines.extend(_render_section(section, 6))
    return "\n".join(lines) + "\n"


def test_rendered_yaml_loads_to_defaults(tmp_path):
    path = tmp_path / "mapping.yaml"
    path.write_text(render_mapping_yaml(), encoding="utf-8")
    assert load_config(path) == MapperConfig()
    modified = _modified()
    path.write_text(render_mapping_yaml(modified), encoding="utf-8")
    assert load_config(path) == modified


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python test/test_config.py --write   (rewrites config/mapping.yaml)")
    MAPPING_YAML.write_text(render_mapping_yaml(), encoding="utf-8")
    print(f"wrote {MAPPING_YAML}")
