"""``core3d bench fuzz``: malformed message sets of every class the tests know, shuffled, then
valid sets; counts per rejection reason, how many malformed sets were mapped, whether every
service still answers."""
from __future__ import annotations

import math
import os
import random
import shutil
import sys
import time
from collections import Counter
from typing import Any, Callable, Sequence

import numpy as np

from ...config import load_config
from .common import machine_info
from .frames import FH, FW, valid_set
from .graph import SERVICES, MappingGraph, Peer, bench_workdir, check_services, errors_seen, pick_domain_id

SET_SPACING = 1.0  # seconds between the stamps of consecutive sets (> slop and > max_pose_age)


def _set_image(msg: Any, **fields: Any) -> Any:
    for k, v in fields.items():
        setattr(msg, k, v)
    return msg


def _depth_filled(stamp: float, value: float, encoding: str = "32FC1") -> Any:
    from ...ros import conversions as conv

    return conv.depth_to_image(np.full((FH, FW), value, np.float32), encoding, stamp=stamp, frame_id="cam")


def _pose_with(m: dict, **fields: Any) -> dict:
    p = m["pose"].pose
    for k, v in fields.items():
        obj, attr = k.split("_", 1)
        setattr(getattr(p, {"o": "orientation", "p": "position"}[obj]), attr, v)
    return m


def _info_k(m: dict, k: list[float]) -> dict:
    m["camera_info"].k = [float(x) for x in k]
    return m


# class name -> (acceptable rejection reasons, mutation of a valid set at ``stamp``). A mutation
# returns the messages to publish (a key set to None is not published).
MALFORMED: dict[str, tuple[tuple[str, ...], Callable[[dict, float], dict]]] = {
    "color_short_data": (("bad_image",), lambda m, t: (_set_image(m["color"], data=bytes(m["color"].data)[:-7]), m)[1]),
    "color_long_data": (("bad_image",), lambda m, t: (_set_image(m["color"], data=bytes(m["color"].data) + b"\0" * 11), m)[1]),
    "color_step_short": (("bad_image",), lambda m, t: (_set_image(m["color"], step=FW * 3 - 1), m)[1]),
    "color_step_huge": (("bad_image",), lambda m, t: (_set_image(m["color"], step=2**31), m)[1]),
    "color_dims_huge": (("bad_image",), lambda m, t: (_set_image(m["color"], height=2**30, width=2**30), m)[1]),
    "color_empty": (("bad_image",), lambda m, t: (_set_image(m["color"], height=0, width=0, step=0, data=b""), m)[1]),
    "color_encoding_yuv422": (("bad_image",), lambda m, t: (_set_image(m["color"], encoding="yuv422"), m)[1]),
    "color_encoding_8UC3": (("bad_image",), lambda m, t: (_set_image(m["color"], encoding="8UC3"), m)[1]),
    "color_encoding_empty": (("bad_image",), lambda m, t: (_set_image(m["color"], encoding=""), m)[1]),
    "color_encoding_bayer": (("bad_image",), lambda m, t: (_set_image(m["color"], encoding="bayer_rggb8"), m)[1]),
    "color_encoding_depth": (("bad_image",), lambda m, t: (_set_image(m["color"], encoding="16UC1", step=FW * 2, data=bytes(FW * FH * 2)), m)[1]),
    "depth_encoding_rgb8": (("bad_image",), lambda m, t: (_set_image(m["depth"], encoding="rgb8"), m)[1]),
    "depth_encoding_unknown": (("bad_image",), lambda m, t: (_set_image(m["depth"], encoding="64FC1"), m)[1]),
    "depth_short_data": (("bad_image",), lambda m, t: (_set_image(m["depth"], data=bytes(m["depth"].data)[:-3]), m)[1]),
    "depth_step_short": (("bad_image",), lambda m, t: (_set_image(m["depth"], step=FW * 2 - 2), m)[1]),
    "depth_size_mismatch": (("size_mismatch",), lambda m, t: {**m, "depth": _depth_of_size(t, FW // 2, FH // 2)}),
    "depth_all_nan": (("no_valid_depth",), lambda m, t: {**m, "depth": _depth_filled(t, math.nan)}),
    "depth_all_inf": (("no_valid_depth",), lambda m, t: {**m, "depth": _depth_filled(t, math.inf)}),
    "depth_all_neg_inf": (("no_valid_depth",), lambda m, t: {**m, "depth": _depth_filled(t, -math.inf)}),
    "depth_all_negative": (("no_valid_depth",), lambda m, t: {**m, "depth": _depth_filled(t, -1.0)}),
    "depth_all_zero": (("no_valid_depth",), lambda m, t: {**m, "depth": _depth_filled(t, 0.0, "16UC1")}),
    "depth_all_too_far": (("no_valid_depth",), lambda m, t: {**m, "depth": _depth_filled(t, 1000.0)}),
    "info_zero_k": (("bad_camera_info",), lambda m, t: _info_k(m, [0.0] * 9)),
    "info_nan_focal": (("bad_camera_info",), lambda m, t: _info_k(m, [math.nan, 0, 31.5, 0, 60, 23.5, 0, 0, 1])),
    "info_inf_centre": (("bad_camera_info",), lambda m, t: _info_k(m, [60, 0, math.inf, 0, 60, 23.5, 0, 0, 1])),
    "info_negative_focal": (("bad_camera_info",), lambda m, t: _info_k(m, [-60, 0, 31.5, 0, 60, 23.5, 0, 0, 1])),
    "info_size_zero": (("bad_camera_info", "size_mismatch"), lambda m, t: (_set_image(m["camera_info"], width=0, height=0), m)[1]),
    "info_size_mismatch": (("size_mismatch", "bad_camera_info"), lambda m, t: (_set_image(m["camera_info"], width=640, height=480), m)[1]),
    "pose_nan_quaternion": (("bad_pose",), lambda m, t: _pose_with(m, o_x=math.nan)),
    "pose_inf_quaternion": (("bad_pose",), lambda m, t: _pose_with(m, o_y=math.inf)),
    "pose_zero_quaternion": (("bad_pose",), lambda m, t: _pose_with(m, o_w=0.0)),
    "pose_nan_position": (("bad_pose",), lambda m, t: _pose_with(m, p_x=math.nan)),
    "pose_inf_position": (("bad_pose",), lambda m, t: _pose_with(m, p_z=-math.inf)),
    "pose_stale": (("stale_pose",), lambda m, t: (_set_stamp(m["pose"], t - 0.5), m)[1]),
    "pose_missing": (("stale_pose", "no_pose"), lambda m, t: {**m, "pose": None}),
    "depth_missing": (("unsynced_depth", "no_depth"), lambda m, t: {**m, "depth": None}),
    "info_missing": (("unsynced_camera_info", "no_camera_info"), lambda m, t: {**m, "camera_info": None}),
    "partners_unsynced": (("unsynced_depth", "unsynced_camera_info", "stale_pose"), lambda m, t: _shift_partners(m, t + 0.3)),
    "set_out_of_order": (("out_of_order",), lambda m, t: valid_set(t - 1000.0 * SET_SPACING)),
    # a pose in another frame than ros.map_frame: refused (wrong_frame), not mapped as given
    "pose_wrong_frame": (("wrong_frame", "bad_pose"), lambda m, t: (_set_image(m["pose"].header, frame_id="odom"), m)[1]),
}
KNOWN_OPEN: dict[str, str] = {}  # classes a known, still open fault maps (none now)


def _depth_of_size(stamp: float, w: int, h: int) -> Any:
    from ...ros import conversions as conv

    return conv.depth_to_image(np.ones((h, w), np.float32), stamp=stamp, frame_id="cam")


def _set_stamp(msg: Any, stamp: float) -> None:
    from ...ros import conversions as conv

    msg.header.stamp = conv.to_time(stamp)


def _shift_partners(m: dict, stamp: float) -> dict:
    for k in ("depth", "camera_info", "pose"):
        _set_stamp(m[k], stamp)
    return m


def _reasons_consistent(sent: Counter, rejected: dict[str, int]) -> bool:
    """Whether the rejections can be the sets' own: every set rejected once, each for one of the
    reasons its class allows (a class with several, e.g. a missing partner, may go either way)."""
    fixed: Counter = Counter()
    flexible: Counter = Counter()
    for name, n in sent.items():
        reasons = MALFORMED[name][0]
        if len(reasons) == 1:
            fixed[reasons[0]] += n
        for r in reasons:
            flexible[r] += n if len(reasons) > 1 else 0
    actual = {k: v for k, v in rejected.items() if v}
    return (
        sum(actual.values()) == sum(sent.values())
        and all(fixed[r] <= actual.get(r, 0) <= fixed[r] + flexible[r] for r in set(fixed) | set(actual))
    )


def bench_fuzz(
    sets: int = 10000,
    rate: float = 100.0,
    classes: Sequence[str] | None = None,
    valid_after: int = 5,
    seed: int = 0,
    config: str | None = None,
    workdir: str | None = None,
    progress: bool = True,
    domain_id: int | None = None,
    perception: str = "process",
) -> dict:
    """``sets`` malformed sets (classes drawn at random) at ``rate`` sets/s, then valid ones,
    into the graph (``perception``: see MappingGraph)."""
    from geometry_msgs.msg import PoseStamped
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image
    from tqdm import tqdm

    names = list(classes) if classes else list(MALFORMED)
    unknown = [c for c in names if c not in MALFORMED]
    if unknown:
        raise ValueError(f"unknown fuzz classes {unknown}; known: {sorted(MALFORMED)}")
    cfg = load_config(config)
    ros = cfg.ros
    wd, own = bench_workdir(workdir, "fuzz")
    domain = domain_id if domain_id is not None else pick_domain_id()
    overrides = {"ros.qos_depth": "1000", "ros.sync_queue": "30", "ros.work_queue": "1000",
                 "ros.sync_slop": "0.05", "ros.max_pose_age": "0.2", "keyframes.enabled": "false"}
    rng = random.Random(seed)
    node = MappingGraph(wd, domain, overrides, config=config, perception=perception)
    peer = Peer(domain)
    sent: Counter = Counter()
    try:
        qos = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=1000,
                         durability=DurabilityPolicy.VOLATILE)
        pubs = {
            "color": peer.node.create_publisher(Image, ros.color_topic, qos),
            "depth": peer.node.create_publisher(Image, ros.depth_topic, qos),
            "camera_info": peer.node.create_publisher(CameraInfo, ros.info_topic, qos),
            "pose": peer.node.create_publisher(PoseStamped, ros.pose_topic, qos),
        }
        if not peer.wait_for_services(90.0):
            raise RuntimeError(f"the node did not come up:\n{node.log_text()[-3000:]}")
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline and not all(p.get_subscription_count() for p in pubs.values()):
            time.sleep(0.05)
        time.sleep(0.5)  # let the subscriptions match the publishers too

        def publish(msgs: dict) -> None:
            keys = [k for k, v in msgs.items() if v is not None]
            rng.shuffle(keys)  # any arrival order
            for k in keys:
                pubs[k].publish(msgs[k])

        t = 1.0e6  # stamps: far from 0, so that "1000 sets earlier" is still a valid time
        colour_sent = 0
        # Valid sets first, until their masks (from perception, a keyframe at a time) made an
        # object: "out of order" needs a decided frame before it, and get_object an object.
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline:
            publish(valid_set(t))
            t += SET_SPACING
            colour_sent += 1
            if not peer.wait_settled(colour_sent, 30.0):
                raise RuntimeError(f"warm-up sets not decided: {peer.counters()}\n{node.log_text()[-2000:]}")
            if peer.diag.get("objects"):
                break
        base = peer.counters()

        t0 = time.monotonic()
        bar = tqdm(total=sets, unit="set", desc="fuzz", file=sys.stderr, disable=not progress, dynamic_ncols=True)
        for i in range(sets):
            name = rng.choice(names)
            msgs = MALFORMED[name][1](valid_set(t), t)
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            publish(msgs)
            sent[name] += 1
            colour_sent += msgs.get("color") is not None
            t += SET_SPACING
            bar.update(1)
        bar.close()
        publish_s = time.monotonic() - t0
        # partners without colour decide a last malformed colour frame that waits for a partner
        publish({**valid_set(t), "color": None})
        t += SET_SPACING
        settled = peer.wait_settled(colour_sent, 60.0 + sets * 0.02)
        after_malformed = peer.counters()
        mapped_malformed = after_malformed["mapped"] - base["mapped"]

        services = check_services(peer, f"stress_fuzz_{os.getpid()}.npz")
        for _ in range(valid_after):
            publish(valid_set(t))
            t += SET_SPACING
            colour_sent += 1
        valid_settled = peer.wait_settled(colour_sent, 30.0)
        final = peer.counters()
        alive = node.alive()
        exc = errors_seen(node, peer)
    finally:
        peer.close()
        code = node.stop()

    expected: Counter = Counter()
    for name, n in sent.items():
        expected[MALFORMED[name][0][0]] += n
    rejected = {k: after_malformed["rejected_by_reason"].get(k, 0) - base["rejected_by_reason"].get(k, 0)
                for k in after_malformed["rejected_by_reason"]}
    out = {
        "bench": "fuzz",
        "perception": perception,
        "reasons_consistent": _reasons_consistent(sent, rejected),
        "sets_sent": sum(sent.values()),
        "sets_by_class": dict(sorted(sent.items())),
        "rate_sets_per_s": rate,
        "publish_s": publish_s,
        "settled": settled,
        "colour_received": after_malformed["received"] - base["received"],
        "rejected_by_reason": {k: v for k, v in sorted(rejected.items()) if v},
        "expected_by_reason": dict(sorted(expected.items())),
        "dropped": after_malformed["dropped"] - base["dropped"],
        "mapped_malformed": mapped_malformed,
        "known_open_faults": {k: v for k, v in KNOWN_OPEN.items() if sent.get(k)},
        "sync_out_of_order": after_malformed["sync_out_of_order"],
        "sync_dropped": after_malformed["sync_dropped"],
        "services": services,
        "all_services_answered": all(s["answered"] for s in services.values()) and len(services) == len(SERVICES),
        "valid_after": valid_after,
        "valid_after_mapped": final["mapped"] - after_malformed["mapped"],
        "valid_after_settled": valid_settled,
        "exceptions": exc,
        "node_alive_at_end": alive,
        "node_exit_code": code,
        "workdir": str(wd) if not own else None,
        "machine": machine_info(),
    }
    if own:
        shutil.rmtree(wd, ignore_errors=True)
    return out
