"""Shared test fixtures. ROS tests pick their own domain (the module's DOMAIN_ID), so that
concurrent runs on one host do not cross-talk."""
from __future__ import annotations

import pytest


@pytest.fixture
def ros_context(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """An initialised rclpy context on the test module's DOMAIN_ID, shut down afterwards."""
    rclpy = pytest.importorskip("rclpy")
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=request.module.DOMAIN_ID)
    yield ctx
    rclpy.try_shutdown(context=ctx)
