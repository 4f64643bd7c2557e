"""Shared test fixtures. ROS tests pick their own domain (the module's DOMAIN_ID), so that
concurrent runs on one host do not cross-talk."""
from __future__ import annotations

import signal

import pytest

# A run started as a background job of a non-interactive shell inherits SIGINT ignored, and so
# would every process a test starts: a `ros2 launch` would then never see the ctrl-c the tests
# send it (and respawn the nodes that the same ctrl-c ended). A handler here makes the children
# start with the default disposition, as from a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def ros_context(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """An initialised rclpy context on the test module's DOMAIN_ID, shut down afterwards."""
    rclpy = pytest.importorskip("rclpy")
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=request.module.DOMAIN_ID)
    yield ctx
    rclpy.try_shutdown(context=ctx)
