"""std_msgs/Header and builtin_interfaces/Time <-> float seconds."""
from __future__ import annotations

import math

from builtin_interfaces.msg import Time
from std_msgs.msg import Header


def to_time(seconds: float) -> Time:
    """builtin_interfaces/Time from float seconds (nanoseconds rounded, carried into seconds)."""
    seconds = float(seconds)
    if not math.isfinite(seconds):
        raise ValueError(f"time must be finite, got {seconds}")
    total_ns = int(round(seconds * 1e9))
    sec, nanosec = divmod(total_ns, 1_000_000_000)
    return Time(sec=int(sec), nanosec=int(nanosec))


def to_seconds(stamp: Time) -> float:
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def make_header(frame_id: str, stamp: Time | float) -> Header:
    if not isinstance(stamp, Time):
        stamp = to_time(stamp)
    return Header(stamp=stamp, frame_id=frame_id)
