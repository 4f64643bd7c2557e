"""The config tree as ROS parameters: one read-only parameter per leaf, same dotted name.

Shared by every core3d node, so ``ros2 param`` shows the same names everywhere
(``fusion.voxel_size``, ``segmenter.name``, ...). Each descriptor carries the field's
description and its range or choices (config.py field metadata), so ``ros2 param describe``
explains it. The values are checked by ``config.validate``, as ``core3d map --config`` checks a
file: a bad one fails at start-up with the same one-line ConfigError naming the parameter.
``validate_node_config`` adds what only the mapping node needs.
"""
from __future__ import annotations

import array
import dataclasses
import typing
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.node import Node
from rclpy.parameter import Parameter

from ..config import ConfigError, MapperConfig, describe, flatten, from_dict, load_config, unflatten

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


def first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def descriptor(name: str, hint: Any) -> ParameterDescriptor:
    """Read-only ParameterDescriptor of config leaf ``name``: description, range and choices from config.py."""
    meta = describe(MapperConfig, name)
    text = meta.get("description") or f"core3d config '{name}'"
    desc = ParameterDescriptor(description=f"{text} (read at start-up)", read_only=True)
    lo_hi = meta.get("range")
    if lo_hi is not None and hint is float:
        lo, hi = (float(v) for v in lo_hi)
        desc.floating_point_range = [FloatingPointRange(from_value=lo, to_value=hi, step=0.0)]
        desc.additional_constraints = f"{lo:g} <= value <= {hi:g}"
    elif lo_hi is not None and hint is int:
        lo, hi = (int(v) for v in lo_hi)
        desc.integer_range = [IntegerRange(from_value=lo, to_value=hi, step=1)]
        desc.additional_constraints = f"{lo} <= value <= {hi}"
    if meta.get("choices"):
        desc.additional_constraints = "one of: " + " | ".join(meta["choices"])
    return desc


def _has_range(desc: ParameterDescriptor) -> bool:
    return bool(desc.floating_point_range or desc.integer_range)


def _without_range(desc: ParameterDescriptor) -> ParameterDescriptor:
    """``desc`` without its range, and not yet read-only: a ranged parameter is declared with
    it, so that ``config.validate`` reports a value out of range (rclpy's refusal would come in
    other words), and gets ``desc`` once its value has passed."""
    return ParameterDescriptor(
        description=desc.description, additional_constraints=desc.additional_constraints, dynamic_typing=desc.dynamic_typing
    )


def declare_config(node: Node, base: MapperConfig | None = None, config_file: str | None = None) -> MapperConfig:
    """Declare ``config_file`` and one read-only parameter per config leaf; read them back.

    Defaults come from ``config_file`` (the parameter, or the argument) when set, else from
    ``base``; ``--ros-args -p`` / ``--params-file`` values override both. The values are
    validated as ``load_config`` validates a file (ConfigError, one line naming the parameter);
    then each parameter gets its whole descriptor (range, read-only).
    """
    cf = node.declare_parameter(
        "config_file",
        config_file or "",
        ParameterDescriptor(description="YAML config loaded before the other parameters", read_only=True),
    ).value
    base = load_config(cf) if cf else (base if base is not None else MapperConfig())
    flat = flatten(base)
    hints = flat_hints(MapperConfig)
    ranged: dict[str, ParameterDescriptor] = {}
    for name, default in flat.items():
        hint = hints[name]
        item = typing.get_args(hint)[0] if typing.get_origin(hint) is list else None
        desc = descriptor(name, hint)
        if hint is float or item is float:
            desc.dynamic_typing = True  # accept 1 as well as 1.0; from_dict checks the type
        by_type = item is not None and not default and not desc.dynamic_typing  # an empty list has no type
        if _has_range(desc):
            ranged[name] = desc
            desc = _without_range(desc)
        try:
            node.declare_parameter(name, _EMPTY_LIST_TYPES[item] if by_type else default, desc)
        except (InvalidParameterValueException, InvalidParameterTypeException) as e:
            raise ConfigError(f"{name}: {first_line(e)}") from None
    values: dict[str, Any] = {}
    for name, default in flat.items():
        # an empty-list default is declared by type only and reads back as "not set"
        value = node.get_parameter_or(name, Parameter(name, value=default)).value
        if value is None:
            value = default
        elif isinstance(value, (array.array, tuple)):
            value = list(value)
        values[name] = value
    cfg = from_dict(unflatten(values))  # validated, in the words of `core3d map --config`
    for name, desc in ranged.items():
        desc.type = node.describe_parameter(name).type
        node.set_descriptor(name, desc)
    return cfg


# ---------------------------------------------------------------------- the mapping node


def validate_node_config(cfg: MapperConfig) -> None:
    """What the mapping node needs beyond ``config.validate`` (ConfigError names the parameter)."""
    if cfg.segmenter.name == "oracle" and not cfg.ros.instance_topic:
        raise ConfigError(
            "segmenter.name 'oracle' needs ground-truth instance ids: set ros.instance_topic "
            "(a 32SC1/16UC1 instance image), or choose another segmenter"
        )
