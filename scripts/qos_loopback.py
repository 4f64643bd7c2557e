"""How many 640x480 colour + depth images cross the loopback, best effort vs reliable.

A plain rclpy publisher and subscriber in two processes (not the mapping node), both QoS in the
same run, so the figures compare side by side. Prints one JSON line. Run it in the environment:

    ROS_DOMAIN_ID=177 scripts/in-env python scripts/qos_loopback.py [FRAMES]
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

W, H, HZ = 640, 480, 30.0


def _qos(reliability: str):
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    policy = ReliabilityPolicy.RELIABLE if reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT
    return QoSProfile(depth=10, reliability=policy)


def subscriber(reliability: str, n: int, out: str) -> None:
    import rclpy
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node("qos_loopback_sub")
    got = {"color": 0, "depth": 0}
    node.create_subscription(Image, "qos_loopback/color", lambda m: got.__setitem__("color", got["color"] + 1), _qos(reliability))
    node.create_subscription(Image, "qos_loopback/depth", lambda m: got.__setitem__("depth", got["depth"] + 1), _qos(reliability))
    deadline = time.monotonic() + n / HZ + 30
    done, seen_done = out + ".done", None
    while time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
        if seen_done is None and os.path.exists(done):
            seen_done = time.monotonic()
        if seen_done is not None and time.monotonic() > seen_done + 2.0:  # late messages still count
            break
    with open(out, "w") as f:
        json.dump(got, f)


def publisher(reliability: str, n: int, out: str) -> None:
    import rclpy
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node("qos_loopback_pub")
    pc = node.create_publisher(Image, "qos_loopback/color", _qos(reliability))
    pd = node.create_publisher(Image, "qos_loopback/depth", _qos(reliability))
    while pc.get_subscription_count() == 0 or pd.get_subscription_count() == 0:
        rclpy.spin_once(node, timeout_sec=0.1)
    time.sleep(1.0)
    rgb = np.random.default_rng(0).integers(0, 256, (H, W, 3), np.uint8).tobytes()
    dep = np.random.default_rng(1).integers(0, 4000, (H, W), np.uint16).tobytes()
    t0 = time.monotonic()
    for k in range(n):
        c = Image(height=H, width=W, encoding="rgb8", step=W * 3, data=rgb)
        d = Image(height=H, width=W, encoding="16UC1", step=W * 2, data=dep)
        c.header.stamp.sec = d.header.stamp.sec = k
        pc.publish(c)
        pd.publish(d)
        time.sleep(max(0.0, t0 + (k + 1) / HZ - time.monotonic()))
    open(out + ".done", "w").close()


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    result: dict = {"frames_sent": n, "size": f"{W}x{H}", "rate_hz": HZ}
    with tempfile.TemporaryDirectory() as tmp:
        for rel in ("best_effort", "reliable"):
            out = os.path.join(tmp, f"{rel}.json")
            sub = subprocess.Popen([sys.executable, __file__, "--sub", rel, str(n), out])
            time.sleep(1.0)
            subprocess.run([sys.executable, __file__, "--pub", rel, str(n), out], check=True)
            sub.wait(n / HZ + 60)
            with open(out) as f:
                result[rel] = json.load(f)
    print(json.dumps(result))


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] in ("--sub", "--pub"):
        (subscriber if sys.argv[1] == "--sub" else publisher)(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        main()
