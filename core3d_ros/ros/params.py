"""The config tree as ROS parameters: one read-only parameter per leaf, same dotted name.

Shared by every core3d node, so ``ros2 param`` shows the same names everywhere
(``fusion.voxel_size``, ``segmenter.name``, ...).
"""
from __future__ import annotations

import array
import dataclasses
import typing
from typing import Any

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.parameter import Parameter

from ..config import MapperConfig, flatten, from_dict, load_config, unflatten

_EMPTY_LIST_TYPES = {
    str: Parameter.Type.STRING_ARRAY,
    int: Parameter.Type.INTEGER_ARRAY,
    float: Parameter.Type.DOUBLE_ARRAY,
    bool: Parameter.Type.BOOL_ARRAY,
}


def flat_hints(cls: type, prefix: str = "") -> dict[str, Any]:
    """Dotted name -> type hint of every leaf of a config dataclass tree."""
    out: dict[str, Any] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            out.update(flat_hints(hint, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = hint
    return out


def declare_config(node: Node, base: MapperConfig | None = None, config_file: str | None = None) -> MapperConfig:
    """Declare ``config_file`` and one read-only parameter per config leaf; read them back.

    Defaults come from ``config_file`` (the parameter, or the argument) when set, else from
    ``base``; ``--ros-args -p`` / ``--params-file`` values override both. Raises ConfigError.
    """
    cf = node.declare_parameter(
        "config_file",
        config_file or "",
        ParameterDescriptor(description="YAML config loaded before the other parameters", read_only=True),
    ).value
    base = load_config(cf) if cf else (base if base is not None else MapperConfig())
    flat = flatten(base)
    hints = flat_hints(MapperConfig)
    for name, default in flat.items():
        hint = hints[name]
        item = typing.get_args(hint)[0] if typing.get_origin(hint) is list else None
        desc = ParameterDescriptor(description=f"core3d config '{name}' (read at start-up)", read_only=True)
        if hint is float or item is float:
            desc.dynamic_typing = True  # accept 1 as well as 1.0; from_dict checks the type
            node.declare_parameter(name, default, desc)
        elif item is not None and not default:
            node.declare_parameter(name, _EMPTY_LIST_TYPES[item], desc)
        else:
            node.declare_parameter(name, default, desc)
    values: dict[str, Any] = {}
    for name, default in flat.items():
        # an empty-list default is declared by type only and reads back as "not set"
        value = node.get_parameter_or(name, Parameter(name, value=default)).value
        if value is None:
            value = default
        elif isinstance(value, (array.array, tuple)):
            value = list(value)
        values[name] = value
    return from_dict(unflatten(values))
