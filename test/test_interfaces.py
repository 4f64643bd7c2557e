"""The generated core3d interfaces: fields, serialization, and a round trip between processes.

Needs the colcon build of msg/ and srv/ on the path: run through `scripts/in-env`.
"""
from __future__ import annotations

import math
import os
import random
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

rclpy = pytest.importorskip("rclpy", reason="ROS 2 (rclpy) is not installed")

try:
    from core3d.msg import Object, ObjectArray, ParsedQuery, QueryResult
    from core3d.srv import GetObject, LoadMap, Query, SaveMap
except ImportError as exc:  # a collection error with a hint, not a silent skip
    raise ImportError(
        f"core3d.msg / core3d.srv are not importable ({exc}); "
        "run `bash scripts/setup.sh` and the tests through `scripts/in-env`"
    ) from exc

from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message, serialize_message
from rclpy.signals import SignalHandlerOptions

# ------------------------------------------------------------------ field layout

# Fields the rest of the project relies on (name -> ROS type). New fields may be added.
EXPECTED_FIELDS = {
    Object: {
        "id": "uint32",
        "label": "string",
        "label_score": "float",
        "centroid": "geometry_msgs/Point",
        "box_pose": "geometry_msgs/Pose",
        "box_size": "geometry_msgs/Vector3",
        "color": "std_msgs/ColorRGBA",
        "num_voxels": "uint32",
        "num_observations": "uint32",
        "first_seen": "builtin_interfaces/Time",
        "last_seen": "builtin_interfaces/Time",
    },
    ObjectArray: {"header": "std_msgs/Header", "objects": "sequence<core3d/Object>"},
    ParsedQuery: {
        "text": "string",
        "target": "string",
        "attributes": "sequence<string>",
        "relations": "sequence<string>",
        "anchors": "sequence<string>",
    },
    QueryResult: {
        "object": "core3d/Object",
        "score": "float",
        "similarity": "float",
        "relation_score": "float",
        "points": "sensor_msgs/PointCloud2",
        "best_view": "sensor_msgs/Image",
    },
    Query.Request: {
        "text": "string",
        "top_k": "uint32",
        "include_points": "boolean",
        "include_best_view": "boolean",
    },
    Query.Response: {
        "success": "boolean",
        "message": "string",
        "semantic": "boolean",
        "parsed": "core3d/ParsedQuery",
        "results": "sequence<core3d/QueryResult>",
    },
    GetObject.Request: {"id": "uint32", "include_points": "boolean"},
    GetObject.Response: {
        "success": "boolean",
        "message": "string",
        "object": "core3d/Object",
        "points": "sensor_msgs/PointCloud2",
    },
    SaveMap.Request: {"path": "string"},
    SaveMap.Response: {"success": "boolean", "message": "string", "path": "string"},
    LoadMap.Request: {"path": "string"},
    LoadMap.Response: {"success": "boolean", "message": "string", "num_objects": "uint32"},
}


@pytest.mark.parametrize("cls", list(EXPECTED_FIELDS), ids=lambda c: c.__name__)
def test_fields(cls):
    fields = cls.get_fields_and_field_types()
    for name, ros_type in EXPECTED_FIELDS[cls].items():
        assert name in fields, f"{cls.__name__} has no field {name!r}"
        assert fields[name] == ros_type, f"{cls.__name__}.{name}: {fields[name]} != {ros_type}"


def test_service_types_pair_request_and_response():
    for srv in (Query, GetObject, SaveMap, LoadMap):
        assert srv.Request.__name__ == f"{srv.__name__}_Request"
        assert srv.Response.__name__ == f"{srv.__name__}_Response"


# ------------------------------------------------------------------ serialization in process


def _object(oid: int) -> Object:
    o = Object()
    o.id = oid
    o.label = "mug"
    o.label_score = 0.75
    o.centroid.x, o.centroid.y, o.centroid.z = 1.0, -2.0, 0.5
    o.box_pose.position.x, o.box_pose.position.y, o.box_pose.position.z = 1.0, -2.0, 0.5
    o.box_pose.orientation.z, o.box_pose.orientation.w = math.sqrt(0.5), math.sqrt(0.5)
    o.box_size.x, o.box_size.y, o.box_size.z = 0.1, 0.08, 0.12
    o.color.r, o.color.g, o.color.b, o.color.a = 0.8, 0.1, 0.1, 1.0
    o.num_voxels = 321
    o.num_observations = 9
    o.first_seen.sec, o.first_seen.nanosec = 100, 5
    o.last_seen.sec, o.last_seen.nanosec = 200, 6
    return o


def test_query_response_serialization_round_trip():
    resp = Query.Response()
    resp.success = True
    resp.semantic = False
    resp.message = "no semantic encoder: ranked by geometry and colour"
    resp.parsed = ParsedQuery(
        text="the red mug on the table",
        target="mug",
        attributes=["red"],
        relations=["on"],
        anchors=["table"],
    )
    for rank, oid in enumerate((4, 11)):
        r = QueryResult()
        r.object = _object(oid)
        r.score = 1.0 - 0.25 * rank
        r.similarity = float("nan")
        r.relation_score = 0.5
        r.best_view.height, r.best_view.width, r.best_view.encoding = 2, 3, "rgb8"
        r.best_view.step = 9
        r.best_view.data = bytes(range(18))
        resp.results.append(r)

    back = deserialize_message(serialize_message(resp), Query.Response)
    assert back.success and not back.semantic
    assert back.parsed == resp.parsed
    assert [r.object.id for r in back.results] == [4, 11]
    o = back.results[0].object
    assert (o.id, o.label, o.num_voxels, o.num_observations) == (4, "mug", 321, 9)
    assert (o.centroid.x, o.centroid.y, o.centroid.z) == (1.0, -2.0, 0.5)  # float64 fields
    assert o.box_pose == _object(4).box_pose
    assert (o.box_size.x, o.box_size.y, o.box_size.z) == (0.1, 0.08, 0.12)
    assert o.label_score == pytest.approx(0.75)  # float32 fields
    assert (o.color.r, o.color.g, o.color.b, o.color.a) == pytest.approx((0.8, 0.1, 0.1, 1.0))
    assert (o.first_seen.sec, o.first_seen.nanosec, o.last_seen.nanosec) == (100, 5, 6)
    assert math.isnan(back.results[1].similarity)
    assert back.results[1].score == pytest.approx(0.75)
    assert bytes(back.results[0].best_view.data) == bytes(range(18))


# ------------------------------------------------------------------ across processes

# The child publishes a core3d/ObjectArray (transient local, repeated) and serves
# core3d/srv/GetObject; it stops when its stdin closes or after a deadline.
CHILD = textwrap.dedent(
    """
    import math, sys, threading, time
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.signals import SignalHandlerOptions
    from sensor_msgs.msg import PointField
    from core3d.msg import Object, ObjectArray
    from core3d.srv import GetObject

    topic, service, domain = sys.argv[1], sys.argv[2], int(sys.argv[3])
    ctx = Context()
    rclpy.init(context=ctx, domain_id=domain, signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("core3d_interfaces_child", context=ctx)

    def make(oid):
        o = Object()
        o.id = oid
        o.label = "mug" if oid == 7 else "table"
        o.label_score = 0.75
        o.centroid.x, o.centroid.y, o.centroid.z = 1.0, -2.0, 0.5
        o.box_pose.orientation.z, o.box_pose.orientation.w = math.sqrt(0.5), math.sqrt(0.5)
        o.box_size.x, o.box_size.y, o.box_size.z = 0.1, 0.08, 0.12
        o.color.r, o.color.a = 0.8, 1.0
        o.num_voxels = 300 + oid
        o.num_observations = 9
        o.first_seen.sec, o.last_seen.sec = 100, 200
        return o

    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
    pub = node.create_publisher(ObjectArray, topic, qos)
    msg = ObjectArray()
    msg.header.frame_id = "map"
    msg.header.stamp.sec, msg.header.stamp.nanosec = 1234, 5678
    msg.objects = [make(7), make(8)]

    def on_timer():
        pub.publish(msg)

    node.create_timer(0.2, on_timer)
    on_timer()

    def on_get(req, resp):
        if req.id not in (7, 8):
            resp.success = False
            resp.message = f"no object {req.id}"
            return resp
        resp.success = True
        resp.object = make(req.id)
        if req.include_points:
            pc = resp.points
            pc.header.frame_id = "map"
            pc.height, pc.width = 1, 2
            pc.fields = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1)
                         for i, n in enumerate("xyz")]
            pc.point_step, pc.row_step, pc.is_dense = 12, 24, True
            pc.data = bytes(range(24))
        return resp

    node.create_service(GetObject, service, on_get)

    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    deadline = time.monotonic() + 60.0
    print("ready", flush=True)
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
    except ExternalShutdownException:
        pass
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)
    """
)

TIMEOUT = 15.0  # seconds for each wait; the whole test normally takes a few seconds


def _spin_until(executor, predicate, timeout: float, child: subprocess.Popen) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if child.poll() is not None:
            return predicate()
        executor.spin_once(timeout_sec=0.05)
    return predicate()


def test_publish_and_service_across_processes():
    # A domain and names of our own: nothing else on this machine can answer or listen in.
    domain = random.randint(101, 199)
    token = uuid.uuid4().hex[:12]
    topic = f"/core3d_test_{token}/objects"
    service = f"/core3d_test_{token}/get_object"
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain))
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, topic, service, str(domain)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    ctx = Context()
    rclpy.init(context=ctx, domain_id=domain, signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node(f"core3d_interfaces_test_{token}", context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    try:
        received: list[ObjectArray] = []
        qos = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        node.create_subscription(ObjectArray, topic, received.append, qos)
        client = node.create_client(GetObject, service)

        def child_log() -> str:
            if child.poll() is None:
                return "(child still running)"
            out, err = child.communicate(timeout=5)
            return f"child exited {child.returncode}\nstdout:\n{out}\nstderr:\n{err}"

        assert _spin_until(executor, lambda: bool(received), TIMEOUT, child), (
            "no core3d/ObjectArray arrived; " + child_log()
        )
        msg = received[0]
        assert msg.header.frame_id == "map"
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1234, 5678)
        assert [o.id for o in msg.objects] == [7, 8]
        mug = msg.objects[0]
        assert mug.label == "mug" and mug.label_score == pytest.approx(0.75)
        assert (mug.centroid.x, mug.centroid.y, mug.centroid.z) == (1.0, -2.0, 0.5)
        assert mug.box_pose.orientation.w == pytest.approx(math.sqrt(0.5))
        assert mug.box_size.z == pytest.approx(0.12)
        assert mug.color.r == pytest.approx(0.8) and mug.color.a == 1.0
        assert (mug.num_voxels, mug.num_observations) == (307, 9)
        assert (mug.first_seen.sec, mug.last_seen.sec) == (100, 200)

        assert _spin_until(
            executor, lambda: client.service_is_ready(), TIMEOUT, child
        ), "GetObject service never appeared; " + child_log()

        def call(req):
            future = client.call_async(req)
            done = _spin_until(executor, future.done, TIMEOUT, child)
            assert done, "GetObject call timed out; " + child_log()
            return future.result()

        resp = call(GetObject.Request(id=8, include_points=True))
        assert resp.success, resp.message
        assert resp.object.id == 8 and resp.object.label == "table"
        assert resp.object.num_voxels == 308
        assert (resp.points.width, resp.points.point_step) == (2, 12)
        assert [f.name for f in resp.points.fields] == ["x", "y", "z"]
        assert bytes(resp.points.data) == bytes(range(24))

        resp = call(GetObject.Request(id=99, include_points=False))
        assert not resp.success and resp.message == "no object 99"
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)
        if child.poll() is None:
            try:
                child.stdin.close()  # the child's signal to stop
                child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(timeout=5)
        for stream in (child.stdout, child.stderr):
            if stream and not stream.closed:
                stream.close()
