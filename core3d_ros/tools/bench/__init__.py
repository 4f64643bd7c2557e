"""The benches behind ``core3d bench``, one module each; every bench returns a JSON-able dict of
measured figures.

In this process, on the library: ``fusion`` (against Open3D's TSDF), ``scale`` (a map grown to
millions of voxels), ``semantics`` (per-stage latency of one keyframe), ``query`` (query latency,
and the model steps' overhead against the test chat server).

Against the nodes, each in its own process, over real ROS 2 topics and services: ``online``
(perception and mapping as a robot runs them), ``soak``, ``fuzz``, ``load`` and ``kill``; they
share the harness of ``graph`` (the nodes' processes, this process's peer), ``frames`` (what they
replay) and ``open_loop`` (queries on a fixed schedule). ``common``: machine facts, percentiles.

Submodules are imported on use: ``import core3d_ros.tools.bench`` loads neither ROS nor models.
"""
